"""The arena (placeholder until the full arena lands): a quick demo on scikit-learn's digits."""

from __future__ import annotations

__all__: list[str] = []


def main(argv: list[str]) -> int:
    import time

    import torch
    from rich.console import Console
    from rich.table import Table
    from sklearn.datasets import load_digits

    import losskit

    console = Console()
    console.print(f"losskit {losskit.__version__}: {len(losskit.list())} objectives registered")
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[:1200], perm[1200:]
    noisy = y.clone()
    flip = torch.rand(len(y), generator=g) < 0.4
    noisy[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    table = Table(title="digits, 40% symmetric label noise, linear model, clean test accuracy")
    table.add_column("objective")
    table.add_column("accuracy", justify="right")
    table.add_column("seconds", justify="right")
    for name in ("cross_entropy", "focal"):
        fn = losskit.get(name).fn
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 10)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        t0 = time.perf_counter()
        for _ in range(300):
            opt.zero_grad()
            fn(model(x[tr]), noisy[tr]).backward()
            opt.step()
        acc = (model(x[te]).argmax(-1) == y[te]).float().mean().item()
        table.add_row(name, f"{acc:.3f}", f"{time.perf_counter() - t0:.2f}")
    console.print(table)
    return 0
