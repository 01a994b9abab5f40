"""Range rules for training config values, checked once when a config is loaded.

`adapt.config` checks keys and types; this module checks that the numbers make sense, so that
`--set source.optim.lr=-1` or `--set data.batch_size=0` stops before any work with one line
naming the key, instead of a PyTorch traceback or a run that trains on nothing.

Rules match dotted keys by shell-style pattern on the field's name (`*.lr`, `*_weight`,
`*iterations*`), so a field added to adapt/train/config.py is covered by the rule its name
falls under, with no edit here; every key a rule matches must pass all of its rules. A key
no rule matches is only checked to be a finite number. Rules are applied to every number in
a list value (`self_train.lrs`). Checks that relate two keys live in CROSS_CHECKS.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Iterator
from typing import Any

from uda_adapt.common.errors import UserError


@dataclasses.dataclass(frozen=True)
class Rule:
    pattern: str                       # fnmatch pattern on the dotted key, e.g. "*.lr"
    test: Callable[[float], bool]      # True when a value is acceptable
    meaning: str                       # what the value must be, for the message: "greater than 0"


def _range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> tuple[Callable[[float], bool], str]:
    def test(value: float) -> bool:
        return (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    return test, f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _positive(value: float) -> bool:
    return value > 0


def _non_negative(value: float) -> bool:
    return value >= 0


def _at_least_one(value: float) -> bool:
    return value >= 1


POSITIVE = (_positive, "greater than 0")
NON_NEGATIVE = (_non_negative, "0 or more")
AT_LEAST_ONE = (_at_least_one, "1 or more")
PROBABILITY = _range(0.0, 1.0)
OPEN_UNIT = _range(0.0, 1.0, low_open=True, high_open=True)
FRACTION = _range(0.0, 1.0, low_open=True)         # (0, 1]: a share that must keep something

RULES: tuple[Rule, ...] = tuple(Rule(pattern, *check) for pattern, check in (
    # Counts and schedules.
    ("seed", NON_NEGATIVE),
    ("*iterations*", AT_LEAST_ONE),                 # iterations, iterations_per_round, warmup_iterations ...
    ("*.rounds", AT_LEAST_ONE),
    ("*.log_every", AT_LEAST_ONE),
    ("*.checkpoint_every", AT_LEAST_ONE),
    ("*.early_stop_every", NON_NEGATIVE),           # correlation.early_stop_every: 0 = off
    ("*.every", NON_NEGATIVE),                      # correlation_refit.every: 0 = off
    ("*_interval", NON_NEGATIVE),                   # eval_interval: 0 = off
    ("*.accumulate", AT_LEAST_ONE),
    ("*.batch_size", AT_LEAST_ONE),
    ("*.num_*", NON_NEGATIVE),                      # num_workers, num_overlays
    ("*_limit", NON_NEGATIVE),                      # val_limit: 0 = all
    ("*timeout*", POSITIVE),
    ("*.dim", AT_LEAST_ONE),
    ("*_size", POSITIVE),                           # crop_size, base_size, eval_size (each side)
    # Optimisation.
    ("*.lr", POSITIVE),
    ("*.lrs", POSITIVE),
    ("*.weight_decay", NON_NEGATIVE),
    ("*.momentum", PROBABILITY),
    ("*.poly_power", NON_NEGATIVE),
    # Loss weights: 0 turns a term off, a negative weight would reward the loss.
    ("*_weight", NON_NEGATIVE),
    ("*.lambda_*", NON_NEGATIVE),
    # Pseudo labels and teachers.
    ("*.pseudo.*threshold*", FRACTION),             # a confidence: 0 would keep everything
    ("*.confidence_threshold", FRACTION),
    ("*.ct_pseudo_threshold", PROBABILITY),         # 0 = off
    ("*alpha*", PROBABILITY),
    ("*.pseudo.alpha", FRACTION),                   # IAST's proportion: 0 selects nothing
    ("*ema_alpha", OPEN_UNIT),                      # 0 or 1 is no average
    ("*ema_horizon", PROBABILITY),                  # a share of the iterations; 0 = ema_alpha as given
    ("*.pseudo_margins", _range(0.0, 0.5, high_open=True)),   # shares of the image side
    ("*.mean_teacher.*alpha*", OPEN_UNIT),
    ("*.mean_teacher.*threshold*", OPEN_UNIT),
    ("*.beta", PROBABILITY),
    ("*.gamma", NON_NEGATIVE),
    ("*temperature*", POSITIVE),
    ("*.rcs_min_*", NON_NEGATIVE),                  # rcs_min_pixels, rcs_min_crop_ratio: 0 = no threshold
    ("*prob*", PROBABILITY),                        # probabilities of augmentations
    ("*_p", PROBABILITY),                           # jitter_p, blur_p
    ("*_strength", NON_NEGATIVE),
    # Augmentation.
    ("*.scale_range", POSITIVE),
    ("*.jitter", _range(0.0, 1.0, high_open=True)),
    ("*.mic.ratio", _range(0.0, 1.0, high_open=True)),  # 1 would blank the whole image
    ("*.mic.block_fraction", FRACTION),
    ("*.imnet_feature_distance.weight", NON_NEGATIVE),         # 0 = off
    ("*.imnet_feature_distance.classes", NON_NEGATIVE),        # label ids
    ("*.imnet_feature_distance.scale_min_ratio", PROBABILITY),
))

# Lists with one value per self-training round; the last value repeats, so 1..rounds values.
# More values than rounds is an error, unless `rounds` itself was overridden on the command line
# (`--set self_train.rounds=1` shortens a run and leaves the rest of the schedule unused).
PER_ROUND_LISTS = ("self_train.lrs", "self_train.pseudo.alpha")


def check_train_config(config: Any, overridden: frozenset[str] = frozenset()) -> None:
    """Raise UserError for the first value of `config` (a TrainConfig) that breaks a rule.

    `overridden`: the dotted keys set with --set, which some cross checks read.
    """
    for key, value in walk(config):
        for number in _numbers(value):
            if not math.isfinite(number):
                _fail(key, value, "a finite number")
        for rule in RULES:
            if fnmatch.fnmatchcase(key, rule.pattern) and not all(rule.test(n) for n in _numbers(value)):
                _fail(key, value, rule.meaning)
    for check in CROSS_CHECKS:
        check(config, overridden)


def walk(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a config dataclass, depth first."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from walk(value, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", value


def _numbers(value: Any) -> list[float]:
    """The numbers in a leaf value: itself, or the items of a list; booleans and text are not numbers."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _fail(key: str, value: Any, meaning: str) -> None:
    shown = list(value) if isinstance(value, tuple) else value
    each = " (each value)" if isinstance(value, (list, tuple)) else ""
    raise UserError(f"config key {key!r} must be {meaning}{each}, got {shown!r}; "
                    f"fix it in the config file or with --set {key}=VALUE")


def _lookup(config: Any, key: str) -> Any:
    """The value at a dotted key, or None where the config has no such key."""
    node = config
    for part in key.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def _per_round_lengths(config: Any, overridden: frozenset[str]) -> None:
    rounds = _lookup(config, "self_train.rounds")
    for key in PER_ROUND_LISTS:
        values = _lookup(config, key)
        if values is None or not isinstance(rounds, int):
            continue
        too_many = len(values) > rounds and "self_train.rounds" not in overridden
        if not values or too_many:
            raise UserError(f"config key {key!r} has {len(values)} values for {rounds} rounds; give 1 to {rounds} "
                            f"values, one per self_train round (the last one repeats)")


def _scale_range_order(config: Any, overridden: frozenset[str]) -> None:
    for key, value in walk(config):
        if key.endswith(".scale_range") and isinstance(value, (list, tuple)) and len(value) == 2 and value[0] > value[1]:
            raise UserError(f"config key {key!r} is {list(value)}; give [low, high] with low <= high")


def _live_self_train_options(config: Any, overridden: frozenset[str]) -> None:
    """Refuse settings that the chosen self-training method would silently ignore."""
    st = _lookup(config, "self_train")
    if st is None:
        return
    from uda_adapt.adapt.train.config import OptimConfig   # the defaults; imported here to keep this module standalone

    if st.optim.lr != OptimConfig().lr:
        raise UserError("config key 'self_train.optim.lr' is not read: IAST takes its rate per round from "
                        "self_train.lrs, the mean teacher from self_train.mean_teacher.optim.lr; set those instead")
    if st.method == "mean_teacher" and st.ct_teacher != "teacher":
        raise UserError(f"config key 'self_train.ct_teacher' is {st.ct_teacher!r}, which only IAST uses; the mean "
                        "teacher's correlation transfer always attends over its EMA teacher: set it to 'teacher'")
    if st.ct_input == "masked" and not (st.method == "mean_teacher" and st.mean_teacher.mic.enabled):
        raise UserError("config key 'self_train.ct_input' is 'masked', which needs the mean teacher with MIC: set "
                        "self_train.mean_teacher.mic.enabled=true, or self_train.ct_input=mixed")
    if st.ct_input == "masked" and st.mean_teacher.mic.mode == "separate":
        raise UserError("config key 'self_train.ct_input' is 'masked', but MIC's 'separate' mode masks source images too; "
                        "set self_train.mean_teacher.mic.mode=separatetrgaug, or self_train.ct_input=mixed")
    if st.method != "mean_teacher" and st.correlation_refit.every > 0:
        raise UserError("config key 'self_train.correlation_refit.every' is only used by the mean teacher; "
                        "set it to 0 for IAST")


def _feature_distance_needs_imagenet(config: Any, overridden: frozenset[str]) -> None:
    from uda_adapt.adapt.feature_distance import refuse_without_imagenet   # imported here to keep this module standalone

    st, model = _lookup(config, "self_train"), _lookup(config, "model")
    if st is not None and model is not None and st.method == "mean_teacher":
        refuse_without_imagenet(st.mean_teacher.imnet_feature_distance.weight, model.pretrained, model.name)


def _correlation_shape(config: Any, overridden: frozenset[str]) -> None:
    """Refuse at load what the correlation stage would only refuse after the source stage has run."""
    corr = _lookup(config, "correlation")
    if corr is None:
        return
    if isinstance(corr.upsample, bool) or not isinstance(corr.upsample, int) or corr.upsample < 1:
        raise UserError(f"config key 'correlation.upsample' is {corr.upsample!r}; give a whole number, 1 or more (1: off)")
    if corr.window < 0 or (corr.window and corr.window % 2 == 0):
        raise UserError(f"config key 'correlation.window' is {corr.window}; give 0 (global attention) or an odd number of cells")
    if corr.position_bias and not corr.window:
        raise UserError("config key 'correlation.position_bias' needs a local window (correlation.window, an odd number "
                        "of cells): global attention has no fixed table of offsets")


CROSS_CHECKS: tuple[Callable[[Any, frozenset[str]], None], ...] = (_per_round_lengths, _scale_range_order,
                                                                   _live_self_train_options, _feature_distance_needs_imagenet,
                                                                   _correlation_shape)
