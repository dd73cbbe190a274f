"""Localization maps and the initial label Y0: Skip-CAM on a frozen CLIP ViT (``skipcam``), its text prompts
(``prompts``), class-aware attention affinity (``caa``), PAR (``par``), the CLIP model registry and weights
(``clip_models``) and the token-to-image resize of the maps (``loc_maps``)."""
