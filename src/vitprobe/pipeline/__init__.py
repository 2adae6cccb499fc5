"""The pipeline's stages, each a function of plain arguments that a `workflow/scripts/` script
calls once: sample, prepare, extract (or extract_attention then reduce), aggregate, maps,
parameters, figures, video. The library (`api`, `models`, `weights`, `data`, `metrics`, `plots`)
never imports this package."""
