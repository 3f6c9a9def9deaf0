"""The config layer: field docs, validation messages, --set overrides, dict round trip."""

from __future__ import annotations

import dataclasses

import pytest

from fdsl.config import apply_overrides, field_docs
from fdsl.experiment import Experiment
from fdsl.generators import generator_class, generator_names
from fdsl.presets import get_preset, preset_names


@pytest.mark.parametrize("name", generator_names())
def test_every_generator_field_has_a_docstring(name):
    cls = generator_class(name).config_cls
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


def test_experiment_fields_have_docstrings():
    docs = field_docs(Experiment)
    assert all(docs.get(f.name) for f in dataclasses.fields(Experiment))


@pytest.mark.parametrize("section", ["synthesis", "pretrain", "finetune", "ssl"])
def test_platform_config_fields_have_docstrings(section):
    cls = type(getattr(Experiment(), section))
    docs = field_docs(cls)  # fields of a base (the shared sections) included
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
    if section != "synthesis":
        assert {"num_workers", "cpus_per_worker", "augment_cpus", "use_gpu"} <= set(docs)


def test_override_types_are_checked():
    exp = get_preset("debug-fractaldb", ["data.num_classes=5", "data.seed=3", "draw_mode=point"])
    assert (exp.data.num_classes, exp.data.seed, exp.data.draw_mode) == (5, 3, "point")
    with pytest.raises(ValueError, match=r"^num_classes: got '2\.5', expected an integer"):
        get_preset("debug-fractaldb", ["num_classes=2.5"])
    with pytest.raises(ValueError, match=r"^fill_rate: got 'lots', expected a number"):
        get_preset("debug-fractaldb", ["fill_rate=lots"])
    with pytest.raises(ValueError, match=r"^draw_mode: got 'blob', expected one of"):
        get_preset("debug-fractaldb", ["draw_mode=blob"])
    with pytest.raises(ValueError, match=r"^nonsense: unknown"):
        get_preset("debug-fractaldb", ["nonsense=1"])
    with pytest.raises(ValueError, match=r"expected key=value"):
        get_preset("debug-fractaldb", ["num_classes"])


def test_out_of_range_names_field_and_range():
    with pytest.raises(ValueError, match=r"^data\.num_classes: got 0, expected a value in \[1, "):
        get_preset("debug-fractaldb", ["num_classes=0"])
    with pytest.raises(ValueError, match=r"^data\.num_maps_min: got 5, expected a value <= num_maps_max"):
        get_preset("debug-fractaldb", ["num_maps_min=5", "num_maps_max=3"])
    with pytest.raises(ValueError, match=r"^data\.delta: got 2\.0"):
        get_preset("debug-onepfrac", ["delta=2"])


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match=r"^preset: got 'nope', expected one of \[.*debug-fractaldb"):
        get_preset("nope")


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates_and_round_trips(name):
    exp = get_preset(name)
    exp.validate()
    again = Experiment.from_dict(exp.to_dict())
    assert again == exp
    assert exp.data.num_classes >= 1


def test_from_dict_rejects_unknown_fields():
    data = get_preset("debug-fractaldb").to_dict()
    data["data"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        Experiment.from_dict(data)


def test_apply_overrides_validates_result():
    exp = get_preset("debug-fractaldb")
    with pytest.raises(ValueError, match=r"^data\.pad"):
        apply_overrides(exp, ["image_size=16", "pad=10"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "-Infinity"])
@pytest.mark.parametrize(("preset", "key"), [("debug-vit", "pretrain.lr"),
                                             ("debug-fractaldb", "data.fill_rate"),
                                             ("debug-finetune", "finetune.weight_decay"),
                                             ("debug-dino", "ssl.teacher_temp"),
                                             ("debug-vit", "pretrain.norm_mean")])
def test_nan_and_infinity_are_refused_for_every_number(preset, key, value):
    """A comparison with NaN is always false: every range check would pass it without the base check."""
    with pytest.raises(ValueError, match=rf"^{key}: got (nan|inf|-inf), expected a finite number"):
        get_preset(preset, [f"{key}={value}"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["pretrain.num_workers=0"], "use_deepspeed: got true with num_workers=0"),
    (["pretrain.num_workers=0", "pretrain.use_deepspeed=false", "pretrain.zero_stage=0",
      "pretrain.use_gpu=true"], "num_workers: got 0 .* with use_gpu=true"),
    (["pretrain.use_deepspeed=false"], "zero_stage: got 1, expected 0 without use_deepspeed=true"),
    (["pretrain.use_deepspeed=false", "pretrain.zero_stage=0", "pretrain.precision=fp16",
      "pretrain.use_gpu=true"], "fp16 needs use_gpu=true and use_deepspeed=true"),
])
def test_local_mode_and_engine_combinations_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_preset("debug-vit", overrides)


def test_local_mode_batch_is_the_whole_step():
    cfg = get_preset("debug-vit", ["pretrain.num_workers=0", "pretrain.use_deepspeed=false",
                                   "pretrain.zero_stage=0"]).pretrain
    assert (cfg.local_mode, cfg.world_size, cfg.micro_batch_size, cfg.cpus_needed()) == (True, 1, 32, 1.0)


def test_workers_ask_for_their_pool_and_placement():
    """`worker_resource` and `placement_strategy` reach Ray Train's ScalingConfig; a bad name is one
    ValueError naming the field."""
    exp = get_preset("debug-vit", ["pretrain.num_workers=2", "pretrain.worker_resource=train_gpu",
                                   "pretrain.placement_strategy=STRICT_SPREAD"])
    scaling = exp.pretrain.scaling_config()
    assert scaling.resources_per_worker == {"CPU": exp.pretrain.cpus_per_worker, "train_gpu": 1}
    assert scaling.placement_strategy == "STRICT_SPREAD"
    assert get_preset("debug-vit").pretrain.scaling_config().placement_strategy == "PACK"
    with pytest.raises(ValueError, match="worker_resource: got 'a b'"):
        get_preset("debug-vit", ["pretrain.worker_resource=a b"])
    with pytest.raises(ValueError, match="placement_strategy"):
        get_preset("debug-vit", ["pretrain.placement_strategy=RANDOM"])


def test_cooldown_and_warmup_steps_in_the_schedule():
    """timm's cooldown: epochs + cooldown_epochs long, the cosine over `epochs`, then min_lr."""
    import torch
    from timm.scheduler import CosineLRScheduler

    from fdsl.platform.train.config import PretrainConfig

    cfg = PretrainConfig(epochs=30, cooldown_epochs=10, global_batch_size=10, warmup_epochs=0, lr=1e-3,
                         min_lr=1e-5, repeated_aug=1)
    plan = cfg.schedule(100)
    assert (plan["total_steps"], plan["cosine_steps"]) == (400, 300)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = CosineLRScheduler(opt, t_initial=plan["cosine_steps"], lr_min=cfg.min_lr, t_in_epochs=False)
    for step in (300, 350, 399):
        sched.step_update(step)
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert PretrainConfig(warmup_steps=5000, repeated_aug=1).schedule(10**7)["warmup_steps"] == 5000


def test_every_config_field_is_declared_once():
    """A trainer config composes sections and names only where its defaults differ (with_defaults):
    no field is written out in two classes of one config's hierarchy."""
    import ast
    import dataclasses
    import inspect
    import textwrap

    from fdsl.experiment import Experiment

    configs = [Experiment, *{type(v) for v in vars(Experiment()).values() if dataclasses.is_dataclass(v)}]
    for config in configs:
        declared: dict[str, list[str]] = {}
        for klass in config.__mro__:
            if not dataclasses.is_dataclass(klass):
                continue
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
            for node in body:
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    declared.setdefault(node.target.id, []).append(klass.__name__)
        assert {f: c for f, c in declared.items() if len(c) > 1} == {}, config.__name__
    from fdsl.platform.train.config import FinetuneConfig

    # a default set by with_defaults is the config's; type and doc stay the section's
    assert FinetuneConfig().lr == 0.01 and FinetuneConfig.__config_defaults__["lr"] == 0.01
    from fdsl.config import field_docs

    assert "per 256" not in field_docs(FinetuneConfig)["lr"] and field_docs(FinetuneConfig)["lr"]


def test_lr_is_the_applied_rate_and_ssl_gives_its_rate_per_256_images(capsys):
    """One meaning of `lr` (the rate the optimizer applies); SSL's rate is `lr_base`, per 256 images
    as DINO gives it. Its old path `ssl.lr` still works, with one deprecation line; an old run
    folder's `"lr"` still loads."""
    exp = get_preset("laptop-dino")
    ssl = exp.ssl
    assert not hasattr(ssl, "lr") and ssl.peak_lr() == ssl.lr_base * ssl.global_batch_size / 256
    assert exp.finetune.peak_lr() == exp.finetune.lr and exp.pretrain.peak_lr() == exp.pretrain.lr
    apply_overrides(exp, ["ssl.lr=0.002"])
    err = capsys.readouterr().err
    assert exp.ssl.lr_base == 0.002 and err.count("\n") == 1 and "now ssl.lr_base" in err
    old = exp.ssl.to_dict()
    old["lr"] = old.pop("lr_base")
    assert type(exp.ssl).from_dict(old).lr_base == 0.002
    with pytest.raises(ValueError, match="min_lr: .* peak learning rate"):  # against the applied peak
        apply_overrides(get_preset("laptop-dino"), ["ssl.lr_base=1e-3", "ssl.min_lr=5e-4"])
