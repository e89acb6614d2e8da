"""Training the surrogates on dataset rows, and the splits every evaluation uses.

Splits (by design, so a design's rows for several targets never straddle two splits):
- `train` / `valid` / `test`: the small (training-distribution) designs, 65 / 15 / 20 % by design hash;
  `valid` stops training early and picks, per label, the better surrogate (`--model auto`); `test` is never
  looked at while training;
- `large`: deeper and wider networks than any in training (generalization);
- `real`: networks compiled from QONNX models (the zoo at several foldings).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardwire.errors import ParameterError

from .features import FEATURE_VERSION, DesignGraph
from .models import CAPACITY, LABELS, Encoder, make_gnn, rule_resources, to_pyg

WEIGHTS_FORMAT = 2  # 2: the trees' text gzip'd into uint8 tensors (a tenth of the size)
FMAX_SCALE = float(np.log(1000.0))  # log Fmax = log(1000 MHz) - log delay
SHUFFLES = 6
RULE_EXACT_MIN = 0.99  # a rule replaces the learned estimate of a target where it is at least this exact


def pack_text(text: str):
    """A long text as a gzip'd uint8 tensor: what torch.load(weights_only=True) reads back without pickled code."""
    import gzip

    import torch

    return torch.from_numpy(np.frombuffer(gzip.compress(text.encode(), mtime=0), dtype=np.uint8).copy())


def unpack_text(tensor) -> str:
    import gzip

    return gzip.decompress(tensor.numpy().tobytes()).decode()


@dataclass
class Example:
    design_hash: str
    split: str
    target: str
    graph: DesignGraph
    labels: dict | None  # resources (synth rows)
    fmax_mhz: float | None  # Fmax (fmax rows)


def split_of(row: dict) -> str:
    split = row.get("split", "small")
    if split != "small":
        return split
    bucket = int(row["design_hash"][8:16], 16) % 100
    return "train" if bucket < 65 else "valid" if bucket < 80 else "test"


def examples(rows: list[dict]) -> list[Example]:
    out = []
    for row in rows:
        if row.get("error") or row.get("design") is None:
            continue
        if row.get("labels") is None and row.get("fmax_mhz") is None:
            continue
        out.append(
            Example(
                row["design_hash"],
                split_of(row),
                row["target"],
                DesignGraph.from_dict(row["design"]),
                row.get("labels"),
                row.get("fmax_mhz"),
            )
        )
    return out


def load_rows(paths, wa_hls4ml=()) -> list[dict]:
    """Our dataset files, plus wa-hls4ml record files converted to rows (split by the hash of their id)."""
    from hardwire.cache import digest

    from .dataset import RowStore, refresh_features
    from .wahls4ml import read_rows

    from .designs import is_stale

    rows = []
    for path in paths:
        if not Path(path).is_file():
            raise ParameterError("dataset", str(path), "an existing .jsonl.gz file")
        read = RowStore(path).rows()
        fresh = [row for row in read if not is_stale(row)]
        if len(fresh) < len(read):
            print(
                f"{path}: {len(read) - len(fresh)} rows left out: synthesized from generator versions older than "
                "today's (`hardwire dataset generate` makes them anew)",
                file=sys.stderr,
            )
        refresh_features(fresh)
        rows += fresh
    for path in wa_hls4ml:
        converted, _ = read_rows(path)
        for i, row in enumerate(converted):
            h = digest("wa-hls4ml", row.get("id") or f"{path}:{i}", row["design"])
            rows.append(
                {
                    **row,
                    "key": f"{h}:{row['target']}",
                    "design_hash": h,
                    "split": "small",
                    "stage": "synth",
                    "fmax_mhz": None,
                    "error": None,
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------------------------


def _batch(encoder, items):
    from torch_geometric.data import Batch

    return Batch.from_data_list([to_pyg(encoder, ex.graph, ex.target) for ex in items])


def _targets(items):
    import torch

    # a row may lack a label (wa-hls4ml's records have no LUTRAM count): that entry is masked out
    y = torch.tensor([[np.log1p((ex.labels or {}).get(k) or 0.0) for k in LABELS] for ex in items], dtype=torch.float32)
    mask = torch.tensor([[float((ex.labels or {}).get(k) is not None) for k in LABELS] for ex in items])
    f = torch.tensor([np.log(ex.fmax_mhz) if ex.fmax_mhz else 0.0 for ex in items], dtype=torch.float32)
    fmask = torch.tensor([1.0 if ex.fmax_mhz else 0.0 for ex in items])
    return y, mask, f, fmask


def _loss(model, batch, targets):
    y, mask, f, fmask = targets
    log_res, log_delay = model(batch.x, batch.edge_index, batch.batch, batch.num_graphs)
    res_loss = ((log_res - y) ** 2 * mask).sum() / mask.sum().clamp(min=1)
    fmax_loss = (((FMAX_SCALE - log_delay) - f) ** 2 * fmask).sum() / fmask.sum().clamp(min=1)
    return res_loss + fmax_loss


def train_gnn(
    encoder: Encoder,
    train: list[Example],
    valid: list[Example],
    *,
    seed: int,
    epochs: int = 300,
    batch_size: int = 128,
    log=None,
) -> dict:
    """One ensemble member: Adam on log-space squared error, the epoch with the best validation loss kept."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = make_gnn(encoder.node_width).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    data = [to_pyg(encoder, ex.graph, ex.target) for ex in train]
    targets = _targets(train)
    valid_batch = _batch(encoder, valid).to(device)
    valid_targets = tuple(t.to(device) for t in _targets(valid))
    from torch_geometric.data import Batch

    # Collating graphs is the slow part on a CPU: a few shuffles are collated once and cycled through.
    batches = []
    for _ in range(SHUFFLES):
        order = rng.permutation(len(data))
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batches.append(
                (
                    Batch.from_data_list([data[i] for i in index]).to(device),
                    tuple(t[torch.from_numpy(index)].to(device) for t in targets),
                )
            )
    per_epoch = -(-len(data) // batch_size)
    best, best_state, since = float("inf"), None, 0
    for epoch in range(epochs):
        model.train()
        for batch, batch_targets in batches[(epoch % SHUFFLES) * per_epoch : (epoch % SHUFFLES + 1) * per_epoch]:
            loss = _loss(model, batch, batch_targets)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
        scheduler.step()
        model.eval()
        with torch.no_grad():
            value = float(_loss(model, valid_batch, valid_targets))
        if value < best:
            best, since = value, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
        if log and epoch % 25 == 0:
            log(f"  gnn seed {seed} epoch {epoch}: valid loss {value:.4f} (best {best:.4f})")
        if since >= 60:
            break
    return best_state


def train_trees(encoder: Encoder, train: list[Example], valid: list[Example], *, seed: int) -> dict:
    """One ensemble member of LightGBM regressors: one per label on log1p, and one for log Fmax."""
    import lightgbm

    models = {}
    for label in (*LABELS, "fmax"):

        def pick(items):
            if label == "fmax":
                items = [ex for ex in items if ex.fmax_mhz]
                return items, [np.log(ex.fmax_mhz) for ex in items]
            items = [ex for ex in items if ex.labels and ex.labels.get(label) is not None]
            return items, [np.log1p(ex.labels[label]) for ex in items]

        tr, ytr = pick(train)
        va, yva = pick(valid)
        if len(tr) < 10:
            continue
        # at most 400 trees per label (early stopping usually ends sooner): the shipped weights stay a few MB and a
        # single estimate a few milliseconds
        params = dict(
            n_estimators=400,
            learning_rate=0.05,
            num_leaves=31,
            min_child_samples=5,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            reg_lambda=1.0,
            random_state=seed,
            verbose=-1,
            n_jobs=1,
        )
        model = lightgbm.LGBMRegressor(**params)
        xtr = np.stack([encoder.flat_vector(ex.graph, ex.target) for ex in tr])
        fit = {}
        if len(va) >= 5:
            xva = np.stack([encoder.flat_vector(ex.graph, ex.target) for ex in va])
            fit = dict(
                eval_X=(xva,), eval_y=(np.asarray(yva),), callbacks=[lightgbm.early_stopping(100, verbose=False)]
            )
        model.fit(xtr, np.asarray(ytr), **fit)
        models[label] = pack_text(model.booster_.model_to_string(num_iteration=model.best_iteration_ or None))
    return models


def train(rows: list[dict], *, ensemble: int = 5, epochs: int = 300, seed: int = 0, log=print) -> dict:
    """Train both surrogates; returns the weights dict that `predict.Estimator` loads."""
    from .dataset import dataset_hash

    exs = examples(rows)
    train_set = [ex for ex in exs if ex.split == "train"]
    valid_set = [ex for ex in exs if ex.split == "valid"]
    if len(train_set) < 20 or not valid_set:
        raise ParameterError(
            "dataset",
            f"{len(train_set)} training rows",
            "at least 20 training rows and a validation share (generate more designs)",
        )
    encoder = Encoder.fit([ex.graph for ex in train_set], {ex.target for ex in train_set})
    log(
        f"training on {len(train_set)} rows ({len(valid_set)} for early stopping), {len(encoder.node_features)} "
        f"node features, {len(encoder.flat_names)} flat features, ensemble of {ensemble}"
    )
    started = time.monotonic()
    gnn, trees = [], []
    from hardwire.threads import one_torch_thread

    with one_torch_thread():
        for member in range(ensemble):
            gnn.append(train_gnn(encoder, train_set, valid_set, seed=seed + member, epochs=epochs, log=log))
            trees.append(train_trees(encoder, train_set, valid_set, seed=seed + member))
            log(f"[{time.monotonic() - started:6.0f} s] member {member + 1}/{ensemble} trained")
    checks = rule_checks(train_set)
    weights = {
        "format": WEIGHTS_FORMAT,
        "feature_version": FEATURE_VERSION,
        "dataset_hash": dataset_hash(rows),
        "rows": len(rows),
        "train_rows": len(train_set),
        "encoder": encoder.to_dict(),
        "gnn": gnn,
        "trees": trees,
        "labels": list(LABELS),
        "capacity": CAPACITY,
        "seed": seed,
        "epochs": epochs,
        "rule_checks": checks,
        "rules": {
            target: sorted(label for label, (exact, n) in per.items() if n and exact / n >= RULE_EXACT_MIN)
            for target, per in checks.items()
        },
    }
    log(
        "rules on the training networks (exact/rows): "
        + "; ".join(
            f"{target} " + ", ".join(f"{label} {exact}/{n}" for label, (exact, n) in per.items())
            for target, per in checks.items()
        )
        + f"; used: {weights['rules']}"
    )
    weights["choice"], weights["calibration"] = choose_models(weights, valid_set)
    log(
        f"per label, the model with the lower validation error: {weights['choice']}; its RMS log error there: "
        + ", ".join(f"{k} {v:.3f}" for k, v in weights["calibration"].items())
    )
    weights["seconds"] = round(time.monotonic() - started, 1)
    return weights


def rule_checks(items: list[Example]) -> dict[str, dict[str, list[int]]]:
    """Per target and rule label: [designs the rule gets exactly right, designs] over the synthesized designs of
    `items` (the training split: a rule is used where it is exact there, never chosen on a test split)."""
    out: dict[str, dict[str, list[int]]] = {}
    for ex in items:
        if not ex.labels:
            continue
        for label, value in rule_resources(ex.graph, ex.target).items():
            if ex.labels.get(label) is None:
                continue
            entry = out.setdefault(ex.target, {}).setdefault(label, [0, 0])
            entry[0] += int(value == ex.labels[label])
            entry[1] += 1
    return out


def choose_models(weights: dict, valid: list[Example]) -> dict[str, str]:
    """For each label (and Fmax), the surrogate with the lower mean absolute log error on the validation
    designs (what `--model auto` uses), and that model's RMS log error there (what calibrates its uncertainty);
    also per design group (`label@network`, `label@block`: the GNN reads a network's units and their streams, the
    trees do better on many one-node blocks) where the group has enough validation designs. Chosen on `valid`,
    never on a test split."""
    from .predict import Estimator

    estimator = Estimator(weights)
    errors = {name: {} for name in ("gnn", "trees")}
    for target in sorted({ex.target for ex in valid}):
        items = [ex for ex in valid if ex.target == target]
        for name in errors:
            predictions = estimator.predict_batch([ex.graph for ex in items], target, name)
            for ex, p in zip(items, predictions):
                pairs = [(label, p["resources"][label], (ex.labels or {}).get(label)) for label in LABELS]
                pairs.append(("fmax", p["fmax_mhz"], ex.fmax_mhz))
                for label, predicted, actual in pairs:
                    if actual is not None and predicted is not None:
                        error = abs(np.log1p(predicted) - np.log1p(actual))
                        errors[name].setdefault(label, []).append(error)
                        errors[name].setdefault(f"{label}@{design_group(ex.graph)}", []).append(error)
    choice, calibration = {}, {}
    for key in errors["gnn"].keys() | errors["trees"].keys():
        if "@" in key and min(len(errors[name].get(key, ())) for name in errors) < GROUP_MIN_DESIGNS:
            continue
        mean = {name: float(np.mean(errors[name][key])) for name in errors if errors[name].get(key)}
        choice[key] = min(mean, key=mean.get)
        chosen = errors[choice[key]][key]
        calibration[key] = float(np.sqrt(np.mean(np.square(chosen))))
    for label in (*LABELS, "fmax"):
        choice.setdefault(label, "gnn")
        calibration.setdefault(label, 0.0)
    return dict(sorted(choice.items())), dict(sorted(calibration.items()))


GROUP_MIN_DESIGNS = 20


def design_group(graph) -> str:
    """The group whose own model choice `--model auto` uses: blocks, or networks (ours and wa-hls4ml's)."""
    return "block" if graph.kind == "block" else "network"


def train_command(args) -> int:
    import torch

    from .predict import DEFAULT_WEIGHTS

    from .cli import shipped_datasets

    rows = load_rows(args.datasets or shipped_datasets(), args.wa_hls4ml or ())
    weights = train(
        rows,
        ensemble=args.ensemble or 5,
        epochs=args.epochs or 300,
        seed=args.seed,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    out = Path(args.out) if args.out else DEFAULT_WEIGHTS
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    torch.save(weights, staged)
    staged.replace(out)
    print(
        f"wrote {out} (dataset {weights['dataset_hash']}, {weights['train_rows']} training rows, "
        f"{weights['seconds']} s)"
    )
    return 0
