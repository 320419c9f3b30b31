"""What `dreamserve train` trains and how: one dataclass, carried inside every checkpoint."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from dreamserve.engine.builtin.autoencoder import AEConfig
from dreamserve.engine.builtin.dit import DiTConfig
from dreamserve.engine.builtin.render import SHAPES
from dreamserve.engine.builtin.upscaler import SRConfig


@dataclass
class TrainConfig:
    seed: int = 1234
    ae: AEConfig = field(default_factory=AEConfig)
    # Fine tokens (dit.py): the shipped one-token-per-cell model drew one blob for every shape.
    # Local convolutions (dit.Block) and rotary positions (dit.Attention): drawing a shape
    # wherever its object is (MODEL_CARD.md); half the rotary pairs unturned, a place-free
    # channel for words and content (dit module docstring). Every input in the copy path: the
    # shapes of objects from images 2-3 were lost in combining (dit module docstring). Layout
    # plans: counts and which word belongs to which object were not learned (layout.py).
    dit: DiTConfig = field(
        default_factory=lambda: DiTConfig(
            split=2, local=3, rope=True, rope_unturned=0.5, copy_refs=True, layout=True
        )
    )
    ae_minutes: float = 8.0
    ae_batch: int = 24
    ae_lr: float = 2e-3
    ae_max_steps: int = 10**9
    sr: SRConfig = field(default_factory=SRConfig)
    sr_minutes: float = 5.0
    sr_batch: int = 8
    sr_lr: float = 2e-3
    sr_max_steps: int = 10**9
    pool_t2i: int = 9000
    pool_edit: int = 4500
    pool_ref: int = 1500
    # Batch kinds (stream.KINDS): t2i, edit, reference, shape (one large or medium object,
    # data.Pools.shapes: where the shape word has the most to teach; it is not learned yet),
    # compose (relations and counts only, data.Pools.composed).
    mix: tuple[float, float, float, float, float] = (0.3, 0.25, 0.15, 0.3, 0.0)
    batch: tuple[int, int, int, int, int] = (32, 24, 16, 32, 32)
    lr: float = 5e-4
    warmup: int = 50
    dit_max_steps: int = 10**9
    text_drop: float = 0.1
    # Share of text-to-image samples trained with their scene's layout plan (layout.py); the
    # rest without, so prompts the planner cannot read are still drawn.
    layout_share: float = 0.7
    # Shape batches draw only objects of these shapes when any are named: the round ones the
    # transformer does not tell apart (session 29: flower 0 of 12, hexagon 0 of 5, sun 1 of 9
    # single-object prompts right, drawn as circles; every other shape 85%).
    shape_focus: tuple[str, ...] = ()
    # `--tune-decoder` draws half its batches from captions with a small object of these
    # shapes (data.Pools.small) when any are named. Session 31: of true scenes encoded and
    # decoded, small suns came back as suns 2 times in 20, small hexagons 10 and small flowers
    # 13, every other shape 17-20 (the rays and notches come back faded, and the checker sees
    # a disc); they are among what the reference and edit ceilings lose.
    decoder_focus: tuple[str, ...] = ()
    # Train only the DiT's parameters under these names ("refine.": the refiner), the rest
    # frozen: a grown part learns on top of the trained model, which it cannot disturb.
    train_only: tuple[str, ...] = ()
    t_uniform: float = 0.15  # share of flow times drawn uniformly, so low noise is still trained
    # Loss weight of latent pixels on an object against background ones (train.dit_loss).
    object_weight: float = 10.0
    # Loss weight of latent pixels on an object's outline (part object, part background); 0:
    # weighted as the rest of the object. Session 30: flowers, hexagons and suns noised only to
    # t = 0.3 came back with their outlines smoothed away (MODEL_CARD.md).
    edge_weight: float = 0.0
    ckpt_minutes: float = 4.0
    threads: int = 2
    device: str = "cpu"  # "cuda" trains the same models on a GPU
    # Matmuls in bf16 (autocast; weights, optimiser and loss stay fp32): tensor cores on a GPU,
    # AMX / AVX512-BF16 on a CPU that has them (train.autocast_bf16 checks). On this 2-core
    # Xeon a bf16 matmul ran 6.3x faster than fp32 and a DiT step 1.5-2x (MODEL_CARD.md).
    bf16: bool = True
    workers: int = 0  # processes rendering batches ahead; 0 renders in the training loop

    def __post_init__(self) -> None:
        # A misspelt shape would empty the pool it filters (data.Pools.shapes / .small), and
        # the run would fail at its first batch from it, minutes in, rather than here.
        for name, shapes in (
            ("shape_focus", self.shape_focus),
            ("decoder_focus", self.decoder_focus),
        ):
            unknown = [s for s in shapes if s not in SHAPES]
            if unknown:
                raise ValueError(f"{name}: {unknown} are not shapes; choose from {SHAPES}")

    def under_train_only(self, names: Iterable[str]) -> list[str]:
        """The DiT parameter names `train_only` names (none when it is empty)."""
        return [n for n in names if n.startswith(self.train_only)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        kw = dict(d)
        kw["ae"] = AEConfig.from_dict(kw["ae"])
        kw["dit"] = DiTConfig.from_dict(kw["dit"])
        # Checkpoints from before the trained upscaler carry no SR config: the default one.
        kw["sr"] = SRConfig.from_dict(kw.get("sr", SRConfig().to_dict()))
        # As tuples (JSON gives lists), and saved before the shape (then the compose) batches:
        # none of them.
        missing = len(cls().mix) - len(kw["mix"])
        kw["mix"] = (*kw["mix"], *[0.0] * missing)
        kw["batch"] = (*kw["batch"], *[kw["batch"][0]] * missing)
        kw["shape_focus"] = tuple(kw.get("shape_focus", ()))
        kw["decoder_focus"] = tuple(kw.get("decoder_focus", ()))
        kw["train_only"] = tuple(kw.get("train_only", ()))
        return cls(**kw)


CONFIGS: dict[str, TrainConfig] = {
    # The shipped model: sized and scheduled for the 2-core CPU (MODEL_CARD.md).
    "default": TrainConfig(),
    # The same models on a lent GPU: on the CPU rendering is ~10% of a step, on a GPU it would
    # be nearly all of it, so 14 worker processes render ahead; batches 8x, learning rate
    # scaled by about sqrt(8)/1.4, warm-up longer to match.
    "gpu": TrainConfig(
        device="cuda",
        workers=14,
        ae_minutes=3.0,
        ae_batch=96,
        sr_minutes=2.0,
        sr_batch=32,
        batch=(256, 192, 128, 256, 256),
        lr=1e-3,
        warmup=300,
        ckpt_minutes=2.0,
        threads=2,
    ),
    # The shipped model's schedule with reference batches a quarter of the mix (15% of the
    # samples instead of 9%), taken from t2i and shape batches alike: reference drifted down
    # over three continuations while the text-to-image rows held. Tried in session 14: the
    # reference row did not move and the text-to-image rows fell a little; not shipped. Session
    # 15 trained the new copy slots under it (shipped): reference rose, count fell
    # (MODEL_CARD.md, "Session 14" and "Session 15").
    "refmix": TrainConfig(mix=(0.25, 0.25, 0.25, 0.25, 0.0)),
    # The shipped model's schedule with relations and counts 2.5x their share of the samples
    # (22% counts, 26% relations, from 9% and 10%), taken from the one-object scenes (50% to
    # 22%), edits and references kept: session 27's test of whether the two rows furthest
    # under their ceilings are short of data or of the model (MODEL_CARD.md, "Session 27").
    "compose": TrainConfig(mix=(0.2, 0.25, 0.15, 0.1, 0.3)),
    # The shipped model's schedule with the shape batches (30% of the samples) all circles,
    # hexagons, flowers and suns: whether the shapes it draws as one disc are short of
    # samples (session 29, MODEL_CARD.md).
    "round": TrainConfig(shape_focus=("circle", "hexagon", "flower", "sun")),
    # The shipped model's schedule with the outlines of objects weighted 30 times (objects 10)
    # and 40% of flow times drawn uniformly (15%): round shapes lost their outlines even when
    # denoised from t = 0.3, where the shifted schedule trains 6% of the time (session 30).
    "outline": TrainConfig(t_uniform=0.4, edge_weight=30.0),
    # With `--tune-decoder`: half the decoder's batches hold small suns, hexagons or flowers,
    # the shapes whose rays and notches its round trip loses (session 31, MODEL_CARD.md).
    "smallround": TrainConfig(decoder_focus=("hexagon", "flower", "sun")),
    # The outline schedule, and a convolutional head over latent pixels (refine.py) grown
    # onto the transformer at zero and trained alone: outlines run inside the fine tokens,
    # and the rest of the model stays as shipped (session 30).
    "refine": TrainConfig(
        dit=replace(TrainConfig().dit, refine=32),  # the shipped transformer's, plus the head
        t_uniform=0.4,
        edge_weight=30.0,
        train_only=("refine.",),
    ),
    # For tests: trains a few steps of a toy-sized model in seconds.
    "tiny": TrainConfig(
        ae=AEConfig(latent_ch=4, enc_ch=(8, 8, 8, 8), dec_ch=(8, 8, 8, 8), patch=1),
        dit=DiTConfig(
            latent_ch=4,
            dim=32,
            depth=1,
            heads=2,
            mlp_ratio=2.0,
            patch=1,
            local=3,
            copy_refs=True,
            layout=True,
        ),
        ae_batch=2,
        ae_max_steps=2,
        sr=SRConfig(ch=4),
        sr_batch=2,
        sr_max_steps=2,
        pool_t2i=12,
        pool_edit=8,
        pool_ref=6,
        batch=(3, 2, 2, 3, 3),
        dit_max_steps=4,
        warmup=2,
    ),
}
