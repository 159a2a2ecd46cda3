"""SAT and the clustering effect (Jin et al., "Explaining Adversarial Robustness of Neural Networks
from Clustering Effect Perspective", ICCV 2023): Table 1 (``sat-cifar10``), Fig. 2/3/7
(``sat-clustering``), Fig. 1/4-6 (``sat-shift``) and the lambda search of §6.1 (``sat-lambda``).
Tables 2 (1000-iteration attacks) and 3 (diffusion-generated data) have no experiment: their
numbers are in ``paper_values.py``."""
