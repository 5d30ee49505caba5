"""normlib: the shared code of normbook (functional math, torch modules, models, data, training, plots)."""
