"""HLDR (Schwartz & Ditzler, "Bolstering Adversarial Robustness with Latent Disparity
Regularization"): the §IV protocol (pretraining, stratified k-fold cross-validation, fine-tuning on
the pairs D and D_N) for HLDR, FIMR, HGD and AGNT, Fig. 2-6 and Table I.

* ``fashion_mnist`` -> ``hldr-fashion-mnist`` (Fig. 2-6 a/b, Table I, on the full Fashion-MNIST)
* ``cifar10``       -> ``hldr-cifar10`` (Fig. 2-6 c/d; the paper config, CPU smoke on the CIFAR-10
  test-set copy of ../shared/data)

Shared: ``_common`` (scales, data, the defenses, rendering, plots, claims), ``paper_values`` (what
the paper prints: Table I and the parameter count; its figures are described in the text only).
"""
