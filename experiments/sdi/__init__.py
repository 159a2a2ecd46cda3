"""FGSM-SDI (thesis ch. 3; Jia et al., IEEE TIP 2022): Tables II, III, IV, VI and Fig. 26."""
