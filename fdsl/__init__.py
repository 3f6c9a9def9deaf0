"""fdsl: Formula-Driven Supervised Learning at scale on Ray.

Importing `fdsl` (or `fdsl.generators`) never imports Ray or torch. The Python API
(`fdsl.generate`, `fdsl.pretrain`, `fdsl.finetune`, `fdsl.ssl`, `fdsl.sweep`, `fdsl.experiment`,
`fdsl.tracking`, `fdsl.shutdown`; docs/python.md) lives in `fdsl.api`, loaded on first use.
"""

__version__ = "0.1.0"

API = ("DataSet", "FineTuning", "Run", "SweepResult", "experiment", "finetune", "generate", "pretrain",
       "shutdown", "ssl", "sweep", "tracking")


def __getattr__(name: str):
    if name in API:  # Ray and torch load with the API's first use, not with `import fdsl`
        import fdsl.api

        return getattr(fdsl.api, name)
    raise AttributeError(f"module 'fdsl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
