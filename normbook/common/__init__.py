"""What several chapters of the book share: models, data, the training loop,
ensembles, worker processes, process groups, plot style, timing, the
character-LM task, the batch-statistics probes and the seed knob.

Nothing here imports a chapter's module.
"""
