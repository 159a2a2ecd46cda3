"""Analysis tools: Layer Sustainability Analysis (CM, MVL; Khalooei et al.), input-space loss
landscapes (``advjax.analysis.landscape``; Li et al., the thesis' Fig. 32) and plots."""
from advjax.analysis.lsa import (MVL, StatisticalNoise, algorithm2, default_perturbations,
                                 format_mvl_versus_eta, layer_cms, most_vulnerable_layers, mvl_versus_eta,
                                 perturbation_cms)
from advjax.analysis.landscape import (Landscape, adversarial_directions, loss_landscape, loss_surface,
                                       plot_landscapes, roughness)
from advjax.analysis.clustering import (layer_centroids, layer_clustering_accuracy, shift_gradient_cosine,
                                        shift_sizes)  # SAT (Jin et al.): Clu.Acc, shifts
from advjax.analysis.lambda_search import greedy_lambda_search  # SAT's lambda search (§6.1)

__all__ = ["MVL", "StatisticalNoise", "algorithm2", "default_perturbations",
           "format_mvl_versus_eta", "layer_cms", "most_vulnerable_layers", "mvl_versus_eta", "perturbation_cms",
           "Landscape", "adversarial_directions", "loss_landscape", "loss_surface", "plot_landscapes",
           "roughness", "layer_centroids", "layer_clustering_accuracy", "shift_gradient_cosine", "shift_sizes",
           "greedy_lambda_search"]
