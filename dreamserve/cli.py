"""The `dreamserve` command: serve, worker, generate, keys, train, train-expert, eval.

Each command imports its implementation lazily, so `serve` (the API process) never loads
torch and `--help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dreamserve.config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
app.add_typer(keys_app, name="keys")

DataDir = Annotated[Path | None, typer.Option(help="Where the database and files live.")]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
    data_dir: DataDir = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes to start.")] = None,
    generator: Annotated[str | None, typer.Option(help="'builtin' or 'module:factory'.")] = None,
    public_base_url: Annotated[str | None, typer.Option(help="Base of output URLs.")] = None,
    output_ttl: Annotated[float | None, typer.Option(help="Seconds outputs live.")] = None,
    insecure_open: Annotated[
        bool, typer.Option("--insecure-open", help="Run without API keys on a public bind.")
    ] = False,
) -> None:
    """Start the HTTP API and its worker processes."""
    from dreamserve.server import serve as run_server

    settings = Settings.load(
        host=host,
        port=port,
        data_dir=data_dir,
        workers=workers,
        generator=generator,
        public_base_url=public_base_url,
        output_ttl=output_ttl,
        insecure_open=insecure_open or None,
    )
    raise typer.Exit(run_server(settings))


@app.command()
def worker(
    data_dir: DataDir = None,
    generator: Annotated[str | None, typer.Option(help="'builtin' or 'module:factory'.")] = None,
) -> None:
    """Run one worker process against the store (serve starts these for you)."""
    from dreamserve.jobs.worker import run_worker

    raise typer.Exit(run_worker(Settings.load(data_dir=data_dir, generator=generator)))


@keys_app.command("create")
def keys_create(name: str, data_dir: DataDir = None) -> None:
    """Create a key and print its token once; only a hash is stored."""
    from dreamserve.api.auth import create_key

    key, token = create_key(Settings.load(data_dir=data_dir), name)
    typer.echo(f"created key {key.id} ({key.name})")
    typer.echo(f"token (shown once): {token}")


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List keys (never their tokens)."""
    from dreamserve.api.auth import list_keys

    for key in list_keys(Settings.load(data_dir=data_dir)):
        state = "revoked" if key.revoked_at else "active"
        typer.echo(f"{key.id}\t{key.name}\t{state}")


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None) -> None:
    """Revoke a key: its token stops working at once."""
    from dreamserve.api.auth import revoke_key

    key = revoke_key(Settings.load(data_dir=data_dir), key_id)
    typer.echo(f"revoked key {key.id} ({key.name})")


@app.command()
def generate(
    prompt: str,
    image: Annotated[list[str] | None, typer.Option("-i", "--image", help="Input image.")] = None,
    size: Annotated[str, typer.Option(help="1K, 2K, 4K or custom.")] = "2K",
    aspect_ratio: Annotated[str, typer.Option(help="e.g. 4:3")] = "match_input_image",
    width: Annotated[int, typer.Option(help="With --size custom.")] = 2048,
    height: Annotated[int, typer.Option(help="With --size custom.")] = 2048,
    seed: Annotated[int | None, typer.Option(help="Same seed, same pixels.")] = None,
    max_images: Annotated[int, typer.Option(help="Up to 15: makes a related set.")] = 1,
    fmt: Annotated[str, typer.Option("--format", help="jpg, png or webp.")] = "png",
    out: Annotated[Path, typer.Option("-o", help="Directory to write into.")] = Path("."),
    generator: Annotated[str, typer.Option(help="'builtin' or 'module:factory'.")] = "builtin",
) -> None:
    """Run the engine without a server and print the files it wrote."""
    from dreamserve.local import generate_files

    inputs = {
        "prompt": prompt,
        "image_input": tuple(image or ()),
        "size": size,
        "aspect_ratio": aspect_ratio,
        "width": width,
        "height": height,
        "seed": seed,
        "max_images": max_images,
        "sequential_image_generation": "auto" if max_images > 1 else "disabled",
        "output_format": fmt,
    }
    raise typer.Exit(generate_files(inputs, out, generator))


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Run directory for checkpoints.")] = Path("runs/main"),
    config: Annotated[str, typer.Option(help="Named training config.")] = "default",
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = True,
    max_minutes: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
    new_dit: Annotated[
        bool,
        typer.Option(
            "--new-dit",
            help="Keep the autoencoder and upscaler (checkpoint or shipped); new transformer.",
        ),
    ] = False,
    rope_gain: Annotated[
        float,
        typer.Option(help="Where rotary gains grown onto a model without them start (0: off)."),
    ] = 0.0,
    lr: Annotated[
        float | None,
        typer.Option(help="The transformer's peak learning rate (default: the config's)."),
    ] = None,
    tune_decoder: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Minutes of training the decoder alone (encoder frozen) before the DiT.",
        ),
    ] = 0.0,
    decoder_blocks: Annotated[
        str | None,
        typer.Option(
            help="Grow the decoder to these residual blocks per stage before --tune-decoder,"
            " as FIRST,LAST (the shipped decoder's are listed in its config.json).",
        ),
    ] = None,
) -> None:
    """Train the built-in model (resumable; checkpoints carry their config)."""
    from dreamserve.engine.builtin.train import main as train_main

    code = train_main(
        out=out,
        config=config,
        resume=resume,
        max_minutes=max_minutes,
        fresh_dit=new_dit,
        rope_gain=rope_gain,
        lr=lr,
        tune_decoder=tune_decoder,
        decoder_blocks=_block_pair(decoder_blocks),
    )
    raise typer.Exit(code)


@app.command("train-expert")
def train_expert(
    minutes: Annotated[
        float,
        typer.Option(
            min=0.0, help="How long to train; 0 exports out/expert.pt as this code samples it."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Run directory (resumes out/expert.pt).")] = Path(
        "runs/expert"
    ),
    weights: Annotated[
        Path | None,
        typer.Option(help="Weights directory whose autoencoder it learns (default: shipped)."),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 1e-3).")] = None,
    device: Annotated[str, typer.Option(help="cpu, or cuda to train on a GPU.")] = "cpu",
    go_on: Annotated[
        bool,
        typer.Option(
            help="Without out/expert.pt: go on from the source weights' expert (fresh"
            " optimiser and schedule) instead of starting from scratch."
        ),
    ] = False,
    focus: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated shapes its one-object batches keep (e.g. hexagon,flower);"
            " default every shape."
        ),
    ] = None,
) -> None:
    """Train the low-noise expert, which draws a planned image's last steps; exports
    out/weights/ (the source weights with the expert)."""
    from dreamserve.engine.builtin.expert_train import main as expert_main

    shapes = tuple(s.strip() for s in focus.split(",")) if focus else ()
    raise typer.Exit(expert_main(out, minutes, weights, lr, device, go_on, shapes))


def _block_pair(text: str | None) -> tuple[int, int] | None:
    """`--decoder-blocks 3,2` -> (3, 2); anything else is a usage error naming the rule."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise typer.BadParameter(
            "two whole numbers, FIRST,LAST (e.g. 3,2)", param_hint="--decoder-blocks"
        )
    return int(parts[0]), int(parts[1])


@app.command("eval")
def evaluate(
    checkpoint: Annotated[
        Path | None, typer.Option(help="Defaults to the shipped weights.")
    ] = None,
    samples: Annotated[int, typer.Option(help="Held-out prompts per category.")] = 50,
    out: Annotated[Path, typer.Option(help="Where the report and grid go.")] = Path("eval"),
    guidance: Annotated[
        float | None, typer.Option(help="Classifier-free guidance; defaults to the model's.")
    ] = None,
    draw: Annotated[
        int,
        typer.Option(
            min=0, help="0: the held-out set MODEL_CARD's columns use; another: a fresh one."
        ),
    ] = 0,
    plan: Annotated[
        bool,
        typer.Option(
            help="Layout plans for the prompts the caption grammar reads (the default, as"
            " served); --no-plan scores the transformer alone."
        ),
    ] = True,
    keep: Annotated[
        bool,
        typer.Option(
            help="Edits keep the input images' pixels where the transformer kept their latents"
            " (the default, as served); --no-keep scores the decoded latents alone."
        ),
    ] = True,
    expert: Annotated[
        bool,
        typer.Option(
            help="A planned image's low-noise steps drawn by the weights' expert, if they"
            " have one (the default, as served); --no-expert: the transformer's to the end."
        ),
    ] = True,
) -> None:
    """Score the model on held-out prompts with the automatic checker."""
    from dreamserve.engine.builtin.evaluate import main as eval_main

    code = eval_main(
        checkpoint=checkpoint,
        samples=samples,
        out=out,
        guidance=guidance,
        draw=draw,
        plan=plan,
        keep=keep,
        expert=expert,
    )
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
