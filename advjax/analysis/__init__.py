"""Analysis tools: Layer Sustainability Analysis (CM, MVL; Khalooei et al.), input-space loss
landscapes (``advjax.analysis.landscape``; Li et al., the thesis' Fig. 32) and plots."""
from advjax.analysis.lsa import (MVL, StatisticalNoise, algorithm2, default_perturbations,
                                 format_mvl_versus_eta, layer_cms, most_vulnerable_layers, mvl_versus_eta,
                                 perturbation_cms)
from advjax.analysis.landscape import (Landscape, adversarial_directions, loss_landscape, loss_surface,
                                       plot_landscapes, roughness)

__all__ = ["MVL", "StatisticalNoise", "algorithm2", "default_perturbations",
           "format_mvl_versus_eta", "layer_cms", "most_vulnerable_layers", "mvl_versus_eta", "perturbation_cms",
           "Landscape", "adversarial_directions", "loss_landscape", "loss_surface", "plot_landscapes",
           "roughness"]
