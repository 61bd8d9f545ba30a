"""The trainer's hyper-parameters, stored in the model card so a model says how it was made."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

EMBEDDING_DIM = 768  # the dimension of `video_embeddings.embedding` / `user_embeddings.embedding`


# TrainConfig fields that change what serving serves, not what trains (`exposure_prior`,
# `new_release_bonus`): the tuner cannot measure them, and two configs that differ only in them
# train alike.
SERVING_ONLY_FIELDS = frozenset({"exposure_prior", "new_release_bonus"})


@dataclass(frozen=True)
class TrainConfig:
    """How the two-tower model is built and trained.

    The loss is `retrieval_weight * in-batch softmax + pointwise_weight * like/nope BCE`; either
    weight may be 0, not both. Learning rate: linear warm-up over `warmup_epochs`, then cosine
    decay to zero at `epochs`. Early stopping watches the validation AUC of like vs nope/sampled
    and restores the best epoch's weights.
    """

    embedding_dim: int = EMBEDDING_DIM
    hidden_units: tuple[int, ...] = (512,)  # each tower: features -> hidden ReLU layers -> 768
    bag_dim: int = 64  # width of each embedding bag (genres, makers, n-grams, videos)
    # Videos with at least this many training examples get their own id embedding; the rest
    # (and videos new since training) have none. 0 turns id embeddings off: content only.
    video_id_min_count: int = 5
    # Share of training rows whose video's id part is dropped (`IdDropout`), so the content
    # path that new videos take is trained on every video.
    video_id_dropout: float = 0.1
    temperature: float = 0.05  # in-batch softmax over cosine similarities / temperature
    retrieval_weight: float = 1.0
    pointwise_weight: float = 1.0
    logq_correction: bool = True  # subtract log(candidate frequency) from in-batch logits
    remove_accidental_hits: bool = True  # the same video twice in a batch is not a negative
    batch_size: int = 1024
    epochs: int = 15
    learning_rate: float = 2e-3
    warmup_epochs: float = 0.5
    weight_decay: float = 1e-6  # L2 on the dense layers' kernels
    # L2 on the embedding bags' rows each batch uses, per example (`EmbeddingBag`'s `l2`).
    bag_l2: float = 0.0
    dropout: float = 0.1
    # The ranking terms (`swiperec.model.layers.VideoRanking`): the prior's standard deviation
    # of a video's own bias around what its content predicts, in logits.
    bias_prior_std: float = 0.5
    # The ranking stage also weighs how the video matches the user's history: the shares of
    # their likes and nopes on its maker, genres and performers (`MATCH_FEATURE_NAMES`), one
    # learned weight each, added to the like logit.
    match_features: bool = True
    # With the match features, also the video's own swipe evidence as of the example (its
    # like log-odds and how many real swipes: `VIDEO_EVIDENCE_NAMES`).
    video_evidence: bool = True
    # Serving only: added to the weight of `video_swipes` (ln(1 + the video's real swipes))
    # in served lists, not in the like/nope score the ranking stage trains. The like/nope loss
    # scores a video as if it were shown; which videos the app's users engage with at all
    # (the swipe logs the lists are measured on) follows how widely each was swiped. Chosen on
    # the validation period: the largest mean Recall@50 over three seeds that keeps new
    # videos' mean Recall@50 at half of theirs without it or more
    # (results/ranking_exposure_prior.json). Recorded in the model card and, added to the
    # weight, in each video set written: a new value serves with the next version written.
    # A model trained without the swipe evidence serves without it.
    exposure_prior: float = 0.2
    # Serving only: added to the like logit of a new release (released in the last 60 days)
    # among the candidates: exploration, optimism for videos whose own evidence is thin, so
    # that a page shows some (the exposure prior alone holds them back). Chosen on the
    # validation period with the exposure prior in place: the largest bonus whose mean
    # Recall@50 over three seeds stays within 1% of the best bonus's; a larger bonus buys more
    # new videos with the top of the list (results/ranking_new_release_bonus.json). Recorded in
    # the model card and in each video set written; a card from before it serves with 1.0.
    new_release_bonus: float = 1.5
    patience: int = 3  # epochs without a better validation AUC before stopping
    shuffle_buffer: int = 100_000  # examples
    steps_per_epoch: int | None = None  # None: one pass over the training examples
    seed: int = 42

    def __post_init__(self) -> None:
        problems = []
        positive_ints = ("embedding_dim", "bag_dim", "batch_size", "epochs", "shuffle_buffer")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive int, got {value!r}")
        if not all(isinstance(u, int) and u > 0 for u in self.hidden_units):
            problems.append(f"hidden_units must be positive ints, got {self.hidden_units!r}")
        for name in ("video_id_min_count", "patience", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{name} must be an int >= 0, got {value!r}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            problems.append(f"steps_per_epoch must be None or >= 1, got {self.steps_per_epoch}")
        for name in ("temperature", "learning_rate", "bias_prior_std"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                problems.append(f"{name} must be a positive number, got {value!r}")
        for name in ("retrieval_weight", "pointwise_weight", "warmup_epochs", "weight_decay",
                     "bag_l2", "exposure_prior", "new_release_bonus"):  # fmt: skip
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a number >= 0, got {value!r}")
        if not problems and self.retrieval_weight == 0 and self.pointwise_weight == 0:
            problems.append("retrieval_weight and pointwise_weight cannot both be 0")
        for name in ("dropout", "video_id_dropout"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        values = asdict(self)
        values["hidden_units"] = list(self.hidden_units)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        values = dict(values)
        if "hidden_units" in values:
            values["hidden_units"] = tuple(values["hidden_units"])
        return cls(**values)
