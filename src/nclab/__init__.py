"""nclab — Neural Collapse Lab.

Train on coarse (or finer) labels, measure neural-collapse metrics during training, recover fine
labels from features, and solve the deep linear unconstrained-features model against closed-form
theory.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "probe":  # lazy: `import nclab` stays light (torch and the models load on first use)
        from nclab.experiments.probe import probe

        return probe
    raise AttributeError(f"module 'nclab' has no attribute {name!r}")
