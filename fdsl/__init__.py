"""fdsl: Formula-Driven Supervised Learning at scale on Ray.

Importing `fdsl` (or `fdsl.generators`) never imports Ray or torch.
"""

__version__ = "0.1.0"
