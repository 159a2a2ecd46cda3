"""What the HLDR paper prints as numbers (Schwartz & Ditzler). Fig. 2-6 exist only as figures
(their values are not in the text and are never read off or invented here); the text's statements
about them are the claims in ``_common.CLAIMS``."""

# Table I: fine-tuning time per sample (the caption says seconds, the header milliseconds; the
# values 2.1 / 5.3 / 2.0 are read as milliseconds)
TABLE_I_MS = {"HLDR": 2.1, "HGD": 5.3, "FIMR": 2.0}
# §VI: "26028363 parameters must be processed to predict with the HGD defended model"; the denoiser
# adds "more than 11 million"
HGD_DEFENDED_PARAMS = 26_028_363
HGD_DENOISER_PARAMS_MIN = 11_000_000
# §IV-V settings
XI = 0.25
ZETA = 0.0025
TRAIN_EPS = (0.0, 16 / 255, 32 / 255)
NOISE_SIGMA = 32 / 255
N_FOLDS = 10
N_PRETRAIN = 10_000
N_PAIRS = 6000  # adversarial examples per fold (2000 benign x 3 radii)
PRETRAIN_MAX_EPOCHS = 1000
PRETRAIN_PATIENCE = 100
LAYER_ERROR_EPS = 8 / 255
