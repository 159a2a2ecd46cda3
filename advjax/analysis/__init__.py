"""Analysis tools: Layer Sustainability Analysis (CM, MVL; Khalooei et al.) and plots."""
from advjax.analysis.lsa import (MVL, StatisticalNoise, algorithm2, default_perturbations,
                                 format_mvl_versus_eta, layer_cms, most_vulnerable_layers, mvl_versus_eta,
                                 perturbation_cms)

__all__ = ["MVL", "StatisticalNoise", "algorithm2", "default_perturbations",
           "format_mvl_versus_eta", "layer_cms", "most_vulnerable_layers", "mvl_versus_eta", "perturbation_cms"]
