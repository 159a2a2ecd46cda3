"""Layerwise adversarial training (Sankaranarayanan et al., "Regularizing deep networks using
efficient layerwise adversarial training", AAAI 2018): Tables 1, 2, 4, 5, 6 and Fig. 2.
Table 3's body is missing from the copy of the paper we have (only its caption survives), so it
has no experiment; Table 7 (WRN-28-10) is given as a paper-scale config only
(``_common.PAPER_CONFIGS``)."""
