"""nclab — Neural Collapse Lab.

Train on coarse (or finer) labels, measure neural-collapse metrics during training, recover fine
labels from features, and solve the deep linear unconstrained-features model against closed-form
theory.
"""

__version__ = "0.1.0"
