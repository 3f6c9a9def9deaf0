"""Formula image generators (numpy + numba only: no Ray, torch or file I/O).

    from fdsl.generators import get_generator
    gen = get_generator("fractaldb", num_classes=10, num_instances=8, seed=0)
    img = gen.render(class_id=3, instance_id=5)   # uint8, HxW (gray) or HxWx3

Adding a generator: subclass `Generator`, decorate it with `@register`, import its module below.
"""

from __future__ import annotations

from fdsl.config import Config, Registry
from fdsl.generators.base import Generator

GENERATORS = Registry("generator")
"""Generator classes by name; `@register` adds one."""


def register(cls: type[Generator]) -> type[Generator]:
    """Class decorator: make a generator available by its `name`."""
    GENERATORS.add(cls.name, cls)
    return cls


def generator_names() -> list[str]:
    return GENERATORS.names()


def generator_class(name: str) -> type[Generator]:
    return GENERATORS.get(name)


def make_config(name: str, **overrides) -> Config:
    """The validated config of generator `name` with its defaults and `overrides`."""
    cls = generator_class(name).config_cls
    try:
        config = cls(**overrides)
    except TypeError as err:
        raise ValueError(f"{name}: {err}; fields are {sorted(cls.__dataclass_fields__)}") from None
    config.validate()
    return config


def get_generator(name: str, **overrides) -> Generator:
    """A ready generator `name` with the defaults of its config updated by `overrides`."""
    return generator_class(name)(make_config(name, **overrides))


def build_generator(name: str, config: Config) -> Generator:
    """A generator from an existing (e.g. preset) config."""
    return generator_class(name)(config)


# Registration happens on import of each module.
from fdsl.generators import exfractaldb as _exfractaldb  # noqa: E402,F401
from fdsl.generators import fractaldb as _fractaldb  # noqa: E402,F401
from fdsl.generators import onepfrac as _onepfrac  # noqa: E402,F401
from fdsl.generators import rcdb as _rcdb  # noqa: E402,F401
from fdsl.generators import visualatom as _visualatom  # noqa: E402,F401

__all__ = ["Generator", "build_generator", "generator_class", "generator_names", "get_generator",
           "make_config", "register"]
