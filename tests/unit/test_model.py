"""The model's pieces on tiny tensors whose expected values are worked out by hand."""

import math
import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf
import tensorflow_recommenders as tfrs

from swiperec.features.preprocessing import AGE_SCALE_DAYS
from swiperec.features.user_history import MATCH_FEATURE_NAMES
from swiperec.features.video_evidence import RANKING_FEATURE_NAMES, VIDEO_EVIDENCE_NAMES
from swiperec.model.config import TrainConfig
from swiperec.model.data import (
    EARLIER_NEW_RELEASE_BONUS,
    Catalogue,
    card_ranking_weights,
    ranking_feature_names,
    served_new_release_bonus,
    served_ranking_weights,
)
from swiperec.model.layers import EmbeddingBag, IdDropout, KnownOnly, VideoRanking
from swiperec.model.towers import (
    USER_BAGS,
    USER_TOWER_INPUTS,
    VIDEO_BAGS,
    VIDEO_TOWER_INPUTS,
    build_user_tower,
    build_video_tower,
)
from swiperec.model.train import fused_adam
from swiperec.model.two_tower import (
    TwoTowerModel,
    fit_match_start,
    in_batch_softmax_loss,
    like_logits,
    match_weights,
    pointwise_loss,
)

# Users and videos in 2-d: user 0 and user 2 point along x, user 1 along y; video 0 along x,
# videos 1 and 2 along y. Rows 0 and 1 are likes, row 2 a nope.
USERS = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
VIDEOS = [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
LABELS = [1, 1, 0]


def softmax_loss(temperature=1.0, remove_accidental_hits=False, ids=(1, 2, 3), probability=None):
    task = tfrs.tasks.Retrieval(
        loss=tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.SUM
        ),
        temperature=temperature,
        remove_accidental_hits=remove_accidental_hits,
    )
    return float(
        in_batch_softmax_loss(
            task,
            tf.constant(USERS),
            tf.constant(VIDEOS),
            tf.constant(LABELS),
            tf.constant([1.0, 1.0, 1.0]),
            tf.constant(ids, tf.int64),
            None if probability is None else tf.constant(probability),
        )
    )


def test_pointwise_loss_is_the_weighted_mean_cross_entropy():
    # logits = scale * cos + bias + user bias: 2 * 0.5 + 0 + 0 = 1 and 2 * -0.5 + 0.5 - 0.5 = -1;
    # both rows are likes: BCE(1, 1) = log(1 + e^-1) = 0.3133, BCE(1, -1) = log(1 + e) = 1.3133;
    # weights 1 and 3: (0.3133 + 3 * 1.3133) / 4 = 1.0633.
    logits = like_logits(
        tf.constant([0.5, -0.5]), tf.constant([[0.0, 2.0], [0.5, 2.0]]), tf.constant([0.0, -0.5])
    )
    np.testing.assert_allclose(logits.numpy(), [1.0, -1.0], atol=1e-6)
    loss = pointwise_loss(logits, tf.constant([1, 1]), tf.constant([1.0, 3.0]))
    expected = (math.log1p(math.exp(-1)) + 3 * math.log1p(math.e)) / 4
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    # A nope: BCE(0, logit) = log(1 + e^logit).
    loss = pointwise_loss(tf.constant([0.5]), tf.constant([0]), tf.constant([1.0]))
    assert float(loss) == pytest.approx(math.log1p(math.exp(0.5)), abs=1e-6)
    # No weight at all: 0, not NaN.
    unweighted = pointwise_loss(tf.constant([0.3]), tf.constant([1]), tf.constant([0.0]))
    assert float(unweighted) == 0


def test_in_batch_softmax_over_liked_rows_only():
    # Scores U V^T: row 0 [1, 0, 0], row 1 [0, 1, 1], row 2 (a nope, weight 0) ignored.
    # Row 0: -log(e / (e + 1 + 1)) = log(e + 2) - 1; row 1: -log(e / (1 + e + e)) = log(1 + 2e) - 1.
    expected = (math.log(math.e + 2) - 1 + math.log(1 + 2 * math.e) - 1) / 2
    assert softmax_loss() == pytest.approx(expected, abs=1e-5)


def test_in_batch_softmax_temperature_divides_the_scores():
    # Temperature 0.5 doubles the scores: row 0 log(e^2 + 2) - 2, row 1 log(1 + 2 e^2) - 2.
    e2 = math.exp(2)
    expected = (math.log(e2 + 2) - 2 + math.log(1 + 2 * e2) - 2) / 2
    assert softmax_loss(temperature=0.5) == pytest.approx(expected, abs=1e-5)


def test_in_batch_softmax_removes_accidental_hits():
    # Rows 1 and 2 show the same video (id 2): for row 1, column 2 is the same video, not a
    # negative, so it leaves the softmax: row 1 becomes log(1 + e) - 1; row 0 is unchanged.
    expected = (math.log(math.e + 2) - 1 + math.log(1 + math.e) - 1) / 2
    assert softmax_loss(remove_accidental_hits=True, ids=(1, 2, 2)) == pytest.approx(
        expected, abs=1e-5
    )


def test_in_batch_softmax_logq_correction():
    # Logits minus log p, p = [1/2, 1/4, 1/4]: row 0 z = [1 + log 2, log 4, log 4], so
    # e^z = [2e, 4, 4] and the loss is log(2e + 8) - log(2e) = log(1 + 4/e); row 1
    # z = [log 2, 1 + log 4, 1 + log 4], e^z = [2, 4e, 4e]: log(2 + 8e) - log(4e) = log(2 + 1/(2e)).
    expected = (math.log(1 + 4 / math.e) + math.log(2 + 1 / (2 * math.e))) / 2
    assert softmax_loss(probability=[0.5, 0.25, 0.25]) == pytest.approx(expected, abs=1e-5)


def sparse(rows, dtype):
    return tf.ragged.constant(rows, dtype=dtype).to_sparse()


def test_embedding_bag_weighted_sum_mean_and_empty_rows():
    bag = EmbeddingBag(3, 2, combiner="sum")
    bag.build(None)
    bag.table.assign([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    ids = sparse([[0, 2], [1], []], tf.int64)
    weights = sparse([[0.5, 0.25], [1.0], []], tf.float32)
    # Row 0: 0.5 * [1, 0] + 0.25 * [2, 2] = [1, 0.5]; row 1: [0, 1]; an empty row is zeros.
    np.testing.assert_allclose(bag([ids, weights]).numpy(), [[1, 0.5], [0, 1], [0, 0]])
    mean = EmbeddingBag(3, 2, combiner="mean")
    mean.build(None)
    mean.table.assign(bag.table)
    # Unweighted mean: row 0 ([1, 0] + [2, 2]) / 2 = [1.5, 1].
    np.testing.assert_allclose(mean(ids).numpy(), [[1.5, 1], [0, 1], [0, 0]])


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("id_dtype", [tf.int64, tf.int32])
def test_a_small_embedding_bag_multiplies_as_the_lookup_combines(combiner, weighted, id_dtype):
    rng = np.random.default_rng(5)
    # Row 0 repeats id 2; row 1 holds a negative id (dropped), a zero and a negative weight
    # (dropped by "mean" and "sqrtn", kept by "sum"); row 2 is empty; row 3 holds only a
    # dropped id: the cases the lookup prunes or fills.
    ids = sparse([[2, 0, 2, 7], [-1, 3, 5, 6], [], [-1], [1]], id_dtype)
    weights = sparse([[0.5, 1.5, 2.0, 0.25], [4.0, 0.0, 3.0, -0.5], [], [1.0], [0.75]],
                     tf.float32)  # fmt: skip
    table = rng.normal(size=(8, 3)).astype(np.float32)
    results = []
    for dense_rows in (EmbeddingBag.DENSE_ROWS, 0):  # the matrix product, then the lookup
        bag = EmbeddingBag(8, 3, combiner)
        bag.DENSE_ROWS = dense_rows
        bag.build(None)
        bag.table.assign(table)
        with tf.GradientTape() as tape:
            out = bag([ids, weights] if weighted else ids)
            loss = tf.reduce_sum(out * tf.range(1.0, 4.0))
        results.append((out.numpy(), tape.gradient(loss, bag.table)))
    (dense_out, dense_grad), (lookup_out, lookup_grad) = results
    # Which path ran shows in the gradient: the product's is dense, the lookup's sparse.
    assert not isinstance(dense_grad, tf.IndexedSlices)
    assert isinstance(lookup_grad, tf.IndexedSlices)
    np.testing.assert_allclose(dense_out, lookup_out, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        dense_grad.numpy(), tf.convert_to_tensor(lookup_grad).numpy(), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(dense_out[2], 0.0)  # an empty row is zeros
    np.testing.assert_array_equal(dense_out[3], 0.0)  # as is one whose ids were all dropped


@pytest.mark.parametrize("dense_rows", [EmbeddingBag.DENSE_ROWS, 0])
def test_an_embedding_bag_refuses_an_id_outside_its_table(dense_rows):
    bag = EmbeddingBag(3, 2, combiner="sum")
    bag.DENSE_ROWS = dense_rows
    bag.build(None)
    ids, weights = sparse([[0, 3]], tf.int64), sparse([[1.0, 1.0]], tf.float32)
    with tf.GradientTape() as tape:
        out = bag([sparse([[0, 2]], tf.int64), weights])
    # the product ran (a dense gradient), or the gathered rows (a sparse one)
    sparse_gradient = isinstance(tape.gradient(out, bag.table), tf.IndexedSlices)
    assert sparse_gradient == (dense_rows == 0)
    with pytest.raises(tf.errors.InvalidArgumentError):
        bag([ids, weights])


def test_embedding_bag_l2_penalises_each_row_the_batch_uses_once_and_only_in_training():
    bag = EmbeddingBag(3, 2, combiner="sum", l2=0.5)
    bag.build(None)
    bag.table.assign([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    ids = sparse([[0, 2], [2], [], [2]], tf.int64)
    bag(ids, training=False)
    assert not bag.losses
    bag(ids, training=True)
    # Rows 0 and 2 are used (2 three times, counted once): 0.5 * (1 + 8) / 4 batch rows.
    [penalty] = bag.losses
    assert float(penalty) == pytest.approx(0.5 * 9 / 4)
    with tf.GradientTape() as tape:
        tape.watch(bag.table)
        bag(ids, training=True)
        gradient = tape.gradient(bag.losses[-1], bag.table)
    # Sparse: only the used rows get a gradient, 2 * 0.5 / 4 * row.
    np.testing.assert_allclose(
        tf.convert_to_tensor(gradient).numpy(), [[0.25, 0], [0, 0], [0.5, 0.5]]
    )


SIZES = {
    "text_ngrams": 5,
    "genres": 3,
    "makers": 3,
    "performers": EmbeddingBag.DENSE_ROWS + 6,  # the lookup's bags; the others multiply
    "user_genres": 3,
    "user_makers": 3,
    "user_performers": 7,
    "user_title_ngrams": EmbeddingBag.DENSE_ROWS + 5,
    "recent_videos": 6,
}
SMALL = TrainConfig(hidden_units=(16,), bag_dim=4, dropout=0.0)


def video_batch(ids):
    n = len(ids)
    return {
        "video_text_ids": sparse([[0, 4]] + [[1]] * (n - 1), tf.int64),
        "video_text_weights": sparse([[0.2, 0.1]] + [[0.5]] * (n - 1), tf.float32),
        "video_genre_ids": sparse([[0, 1]] + [[]] * (n - 1), tf.int64),
        "video_performer_ids": sparse([[]] * n, tf.int64),
        "video_maker_id": tf.constant([0] + [2] * (n - 1), tf.int64),
        "video_id": tf.constant(ids, tf.int64),
        "video_duration_z": tf.constant([0.3] * n),
        "video_age": tf.constant([0.1] * n),
    }


def user_batch(n):
    batch = {}
    for name in USER_TOWER_INPUTS:
        if name.endswith("_ids"):
            batch[name] = sparse([[1, 2]] + [[]] * (n - 1), tf.int64)
        elif name.endswith("_weights"):
            batch[name] = sparse([[0.6, 0.4]] + [[]] * (n - 1), tf.float32)
        else:
            batch[name] = tf.constant([0.5] * n)
    return batch


def test_towers_output_768_unit_vectors_and_new_videos_are_embedded_by_content():
    video_tower = build_video_tower(SIZES, np.array([7, 9]), SMALL)
    user_tower = build_user_tower(SIZES, SMALL)
    assert set(video_tower.input) == set(VIDEO_TOWER_INPUTS)
    assert set(user_tower.input) == set(USER_TOWER_INPUTS)
    videos = video_tower(video_batch([7, 12345, 54321])).numpy()
    users = user_tower(user_batch(3)).numpy()
    for out in (videos, users):
        assert out.shape == (3, 768)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    # Videos 12345 and 54321 have identical features and no id embedding of their own.
    np.testing.assert_allclose(videos[1], videos[2], atol=1e-7)
    # Their id part is zeros, not a learned vector shared by every unknown video.
    id_part = tf.keras.Model(video_tower.input, video_tower.get_layer("video_id_known").output)
    parts = id_part(video_batch([7, 12345, 54321])).numpy()
    assert np.abs(parts[0]).sum() > 0 and not parts[1:].any()


def test_a_video_tower_without_id_embeddings_embeds_by_content_alone():
    video_tower = build_video_tower(SIZES, np.array([], dtype=np.int64), SMALL)
    videos = video_tower(video_batch([7, 12345, 54321])).numpy()
    np.testing.assert_allclose(np.linalg.norm(videos, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(videos[1], videos[2], atol=1e-7)


def model_and_batch(config: TrainConfig):
    """A two-tower model of `config` (video 7 has its own id) and a batch of three examples."""
    model = TwoTowerModel(
        build_user_tower(SIZES, config),
        build_video_tower(SIZES, np.array([7]), config),
        config,
        train_examples=1_000,
    )
    batch = {
        **user_batch(3),
        **video_batch([7, 8, 9]),
        "label": tf.constant([1, 0, 1], tf.int64),
        "weight": tf.constant([1.0, 1.0, 0.5]),
        "candidate_probability": tf.constant([0.5, 0.25, 0.25]),
        **{name: tf.zeros([3]) for name in RANKING_FEATURE_NAMES},  # no match: logits unmoved
    }
    return model, batch


@pytest.mark.parametrize("logq", [True, False])
def test_the_model_loss_is_the_configured_mix_of_both_losses(logq):
    tf.keras.utils.set_random_seed(5)
    config = TrainConfig(
        hidden_units=(16,), bag_dim=4, dropout=0.0, retrieval_weight=0.3, pointwise_weight=2.0,
        logq_correction=logq,
    )  # fmt: skip
    model, batch = model_and_batch(config)
    user, video = model(batch)
    cosine = tf.reduce_sum(user * video, axis=-1)
    ranking = model.video_ranker({k: batch[k] for k in VIDEO_TOWER_INPUTS})
    user_bias = model.user_ranker({k: batch[k] for k in USER_TOWER_INPUTS})
    pointwise = pointwise_loss(
        like_logits(cosine, ranking, user_bias), batch["label"], batch["weight"]
    )
    retrieval = in_batch_softmax_loss(
        model.retrieval, user, video, batch["label"], batch["weight"], batch["video_id"],
        batch["candidate_probability"] if logq else None,
    )  # fmt: skip
    expected = 0.3 * float(retrieval) + 2.0 * float(pointwise)
    assert float(model.compute_loss(batch)) == pytest.approx(expected, rel=1e-5)
    assert float(pointwise) > 0 and float(retrieval) > 0


def test_match_features_add_their_weighted_sum_to_the_like_logit():
    tf.keras.utils.set_random_seed(5)
    config = TrainConfig(hidden_units=(16,), bag_dim=4, dropout=0.0, match_features=True)
    model, batch = model_and_batch(config)
    match = np.array([[1.0, 0, 0.5, 0, 0, 0, 0.4, 2.0], [0, 1.0, 0, 0.5, 0, 0, -1.1, 3.0],
                      [0, 0, 0, 0, 0.2, 0.1, 0.0, 0.0]])  # fmt: skip
    batch.update({name: tf.constant(match[:, i], tf.float32)
                  for i, name in enumerate(RANKING_FEATURE_NAMES)})  # fmt: skip
    *_, before = model.logits(batch)
    # The weights start at 0 (no effect), and are what the like logit adds: the match with
    # the user's history, then the video's swipe evidence.
    assert match_weights(model) == dict.fromkeys(RANKING_FEATURE_NAMES, 0.0)
    weights = np.array([2.0, -1.0, 0.5, -0.5, 1.0, -3.0, 0.7, -0.2], np.float32)
    model.match.kernel.assign(weights[:, None])
    *_, after = model.logits(batch)
    np.testing.assert_allclose(after - before, match @ weights, rtol=1e-5)
    assert match_weights(model) == pytest.approx(
        dict(zip(RANKING_FEATURE_NAMES, weights.tolist(), strict=True))
    )
    # The like/nope loss trains them: a gradient reaches the kernel.
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    assert np.abs(tape.gradient(loss, model.match.kernel).numpy()).sum() > 0
    # Without the video evidence, the match alone: the evidence moves nothing.
    config = TrainConfig(hidden_units=(16,), bag_dim=4, dropout=0.0, video_evidence=False)
    history_only, _ = model_and_batch(config)
    assert list(match_weights(history_only)) == list(MATCH_FEATURE_NAMES)
    history_only.match.kernel.assign(weights[:6, None])
    *_, base = history_only.logits({**batch, **dict.fromkeys(VIDEO_EVIDENCE_NAMES, tf.zeros([3]))})
    *_, moved = history_only.logits(batch)
    np.testing.assert_allclose(moved, base, rtol=1e-6)
    # Examples without them cannot train such a model.
    del batch["match_liked_maker"]
    with pytest.raises(ValueError, match=r"match_liked_maker.*re-run `swiperec transform`"):
        model.logits(batch)
    # A model without them has no weights to report.
    plain, _ = model_and_batch(TrainConfig(hidden_units=(16,), bag_dim=4, match_features=False))
    assert plain.match is None and match_weights(plain) is None


def test_a_cards_match_weights_in_serving_order_with_the_evidence_0_when_untrained():
    weights = dict(zip(RANKING_FEATURE_NAMES, range(1, 9), strict=True))
    np.testing.assert_array_equal(card_ranking_weights({"match_weights": weights}), range(1, 9))
    # A model trained without the evidence (or before it) weighs it 0.
    history_only = {n: weights[n] for n in MATCH_FEATURE_NAMES}
    np.testing.assert_array_equal(
        card_ranking_weights({"match_weights": history_only}), [1, 2, 3, 4, 5, 6, 0, 0]
    )
    assert card_ranking_weights({"match_weights": None}) is None
    assert card_ranking_weights({}) is None
    # A missing match feature is a broken card, not a zero.
    del history_only["match_noped_genres"]
    with pytest.raises(ValueError, match="match_noped_genres"):
        card_ranking_weights({"match_weights": history_only})
    # Served lists add the exposure prior to the swipes' weight; a card from before the prior
    # existed serves as it was trained.
    card = {"match_weights": weights, "hyperparameters": {"exposure_prior": 0.5}}
    np.testing.assert_array_equal(served_ranking_weights(card), [1, 2, 3, 4, 5, 6, 7, 8.5])
    np.testing.assert_array_equal(card_ranking_weights(card), range(1, 9))
    np.testing.assert_array_equal(served_ranking_weights({"match_weights": weights}), range(1, 9))
    assert served_ranking_weights({"hyperparameters": {"exposure_prior": 0.5}}) is None
    # A model trained without the swipe evidence serves without it, prior included.
    history_only = {n: weights[n] for n in MATCH_FEATURE_NAMES}
    card = {"match_weights": history_only, "hyperparameters": {"exposure_prior": 0.5}}
    np.testing.assert_array_equal(served_ranking_weights(card), [1, 2, 3, 4, 5, 6, 0, 0])
    # The new releases' exploration bonus is the card's; a card from before it serves with the
    # constant serving used then.
    assert served_new_release_bonus({"hyperparameters": {"new_release_bonus": 2.5}}) == 2.5
    assert served_new_release_bonus(card) == EARLIER_NEW_RELEASE_BONUS == 1.0
    assert TrainConfig().new_release_bonus > EARLIER_NEW_RELEASE_BONUS
    # Which features a config trains with, in that order.
    assert ranking_feature_names(TrainConfig()) == RANKING_FEATURE_NAMES
    assert ranking_feature_names(TrainConfig(video_evidence=False)) == MATCH_FEATURE_NAMES
    assert ranking_feature_names(TrainConfig(match_features=False)) == ()


def test_the_match_weights_start_from_the_logistic_regression_on_them_alone():
    rng = np.random.default_rng(3)
    match = rng.random((20_000, 6)).astype(np.float32) * [0.5, 0.2, 1.0, 1.0, 0.1, 0.0]
    true = np.array([4.0, -6.0, 1.0, 0.0, 10.0, 0.0])  # raw-share weights; the last is all 0
    label = (rng.random(len(match)) < 1 / (1 + np.exp(-(match @ true - 1.0)))).astype(np.int64)
    scale, kernel = fit_match_start(match, label, np.ones(len(match)))
    np.testing.assert_allclose(scale[:5], np.sqrt(np.mean(match[:, :5] ** 2, axis=0)), rtol=1e-5)
    assert scale[5] == 1.0  # a feature always 0 keeps scale 1 and gets weight 0
    np.testing.assert_allclose(kernel / scale, true, atol=0.6)
    # The model starts there, and reports the raw-share weights serving multiplies by.
    config = TrainConfig(hidden_units=(16,), bag_dim=4, dropout=0.0, video_evidence=False)
    model = TwoTowerModel(
        build_user_tower(SIZES, config), build_video_tower(SIZES, np.array([7]), config), config,
        train_examples=1_000, match_start=(scale, kernel),
    )  # fmt: skip
    reported = np.array([match_weights(model)[n] for n in MATCH_FEATURE_NAMES])
    np.testing.assert_allclose(reported, kernel / scale, rtol=1e-5)


def test_the_bags_penalty_reaches_the_models_training_losses():
    tf.keras.utils.set_random_seed(5)
    config = TrainConfig(hidden_units=(16,), bag_dim=4, dropout=0.0, weight_decay=0.0,
                         bag_l2=1e-2)  # fmt: skip
    model, batch = model_and_batch(config)
    model.compute_loss(batch, training=False)
    prior = sum(float(loss) for loss in model.losses)  # the per-video bias's prior alone
    model.compute_loss(batch, training=True)
    bags = [layer for tower in (model.user_tower, model.video_tower) for layer in tower.layers
            if isinstance(layer, EmbeddingBag)]  # fmt: skip
    assert len(bags) == len(VIDEO_BAGS) + len(USER_BAGS)
    penalties = {bag.name: float(bag.losses[0]) for bag in bags}
    # Every bag the batch uses a row of is penalised; the videos' performers are empty here.
    assert [name for name, penalty in penalties.items() if not penalty > 0] == [
        "video_performer_ids_bag"
    ]
    # train_step adds `model.losses` to the loss.
    total = sum(float(loss) for loss in model.losses)
    assert total == pytest.approx(prior + sum(penalties.values()), rel=1e-5)


def test_catalogue_join_adds_video_features_by_id_and_the_age_at_the_example():
    catalogue = Catalogue(
        np.array([10, 20, 30]),
        {
            "video_maker_id": tf.constant([0, 1, 2], tf.int64),
            "video_genre_ids": tf.ragged.constant([[0], [1, 2], []], dtype=tf.int64),
            "video_age": tf.constant([0.9, 0.9, 0.9]),
        },
        row_counts={10: 3, 30: 1},
    )
    batch = {
        "video_id": tf.constant([30, 10, 10], tf.int64),
        "video_age_days": tf.constant([0.0, 9.0, -5.0]),
    }
    joined = catalogue.join(batch)
    assert joined["video_maker_id"].numpy().tolist() == [2, 0, 0]
    assert tf.sparse.to_dense(joined["video_genre_ids"], -1).numpy().tolist() == [[-1], [0], [0]]
    # The age is the example's: log1p(days) / log1p(10 years), 0 at (or before) release.
    np.testing.assert_allclose(
        joined["video_age"].numpy(), [0.0, math.log(10) / math.log1p(AGE_SCALE_DAYS), 0.0],
        rtol=1e-6,
    )  # fmt: skip
    # Training rows relative to the most frequent video: 3 rows name video 10, 1 names 30;
    # video 20 (none) floors at one row: 10 -> 1, 30 -> 1/3, 20 -> 1/3.
    np.testing.assert_allclose(joined["candidate_probability"].numpy(), [1 / 3, 1, 1], rtol=1e-6)
    assert catalogue.candidate_probability.numpy()[1] == pytest.approx(1 / 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not in the catalogue"):
        catalogue.join({"video_id": tf.constant([99], tf.int64), "video_age_days": [1.0]})


def test_train_config_rejects_bad_values_with_their_names():
    with pytest.raises(ValueError, match="retrieval_weight and pointwise_weight"):
        TrainConfig(retrieval_weight=0, pointwise_weight=0)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        TrainConfig(temperature=0)
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig(dropout=1.0)
    with pytest.raises(ValueError, match="new_release_bonus must be a number >= 0"):
        TrainConfig(new_release_bonus=-1.0)
    config = TrainConfig(hidden_units=(32, 16), epochs=3)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields: colour"):
        TrainConfig.from_dict({"colour": 1})


def test_the_towers_draw_independent_dropout_masks():
    # Shared masks would let the model match row i of the user batch to row i of the video
    # batch by their masks alone: perfect in-batch accuracy in training, chance in validation.
    # Inside a tf.function (as in `fit`), two dropout layers given the same seed draw the same
    # mask; eagerly they do not, so the check runs in a graph.
    tf.keras.utils.set_random_seed(3)
    config = TrainConfig(hidden_units=(64,), bag_dim=4, dropout=0.5)
    towers = (build_user_tower(SIZES, config), build_video_tower(SIZES, np.array([7]), config))
    dropouts = [
        layer for tower in towers for layer in tower.layers
        if isinstance(layer, tf.keras.layers.Dropout)
    ]  # fmt: skip
    assert len(dropouts) == 2

    @tf.function
    def masks(x):
        return [dropout(x, training=True) > 0 for dropout in dropouts]

    user_mask, video_mask = (m.numpy() for m in masks(tf.ones((8, 64))))
    assert 0.3 < user_mask.mean() < 0.7 and 0.3 < video_mask.mean() < 0.7
    assert (user_mask != video_mask).mean() > 0.3


def test_video_ranking_adds_a_known_videos_own_bias_to_its_contents():
    ranking = VideoRanking(id_count=3, id_bias_l2=0.5, initial_scale=5.0)
    features = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    ranking([features, tf.constant([0, 1, 2], tf.int64)])  # builds the weights
    ranking.id_bias.assign([[9.0], [0.5], [-1.0]])  # row 0, out of vocabulary, is never used
    ranking.kernel.assign([[0.2, 0.0], [0.1, np.log(2.0)]])
    out = ranking([features, tf.constant([0, 1, 2], tf.int64)]).numpy()
    # bias = features . kernel[:, 0] + id bias (0 for the unknown row 0):
    # [0.2 + 0, 0.2 + 0.5, 0.2 - 1.0]; scale = 5 * exp(features . kernel[:, 1]): [5, 5, 5 * 4].
    np.testing.assert_allclose(out[:, 0], [0.2, 0.7, -0.8], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], [5.0, 5.0, 20.0], rtol=1e-5)
    # The prior on the whole table: 0.5 * (81 + 0.25 + 1).
    assert float(tf.add_n(ranking.losses)) == pytest.approx(0.5 * 82.25, rel=1e-6)


def test_id_dropout_sends_ids_out_of_vocabulary_only_while_training():
    dropout = IdDropout(0.5)
    ids = tf.range(1, 2001, dtype=tf.int64)
    assert np.array_equal(dropout(ids, training=False).numpy(), ids.numpy())
    tf.keras.utils.set_random_seed(1)
    dropped = dropout(ids, training=True).numpy()
    kept = dropped != 0
    assert 0.45 < kept.mean() < 0.55
    assert np.array_equal(dropped[kept], ids.numpy()[kept])  # kept ids are unchanged
    assert KnownOnly()([tf.ones((3, 2)), tf.constant([0, 4, 0], tf.int64)]).numpy().tolist() == [
        [0, 0], [1, 1], [0, 0]
    ]  # fmt: skip


def test_the_rankers_share_the_towers_feature_weights():
    config = TrainConfig(hidden_units=(16,), bag_dim=4, dropout=0.0)
    model = TwoTowerModel(
        build_user_tower(SIZES, config),
        build_video_tower(SIZES, np.array([7]), config),
        config,
        train_examples=1_000,
    )
    shared = {id(w) for w in model.video_tower.get_layer("video_genre_ids_bag").weights}
    assert shared <= {id(w) for w in model.video_ranker.weights}
    shared = {id(w) for w in model.user_tower.get_layer("user_liked_genre_ids_bag").weights}
    assert shared <= {id(w) for w in model.user_ranker.weights}
    # A fresh model ranks by cosine times 5, every video alike: bias 0, scale 5.
    ranking = model.video_ranker(video_batch([7, 12345])).numpy()
    np.testing.assert_allclose(ranking, [[0.0, 5.0], [0.0, 5.0]], atol=1e-6)


@pytest.mark.parametrize("rows", [20, EmbeddingBag.DENSE_ROWS + 1])
def test_the_fused_adam_steps_as_keras_adam_does_the_embedding_tables_included(rows):
    def train_three_steps(optimizer):
        tf.keras.utils.set_random_seed(3)
        # A table the lookup serves (more than DENSE_ROWS rows) gets a sparse gradient, a
        # small one a dense gradient plus the penalty's sparse one (l2 > 0: its gather adds a
        # sparse gradient over the rows used).
        bag = EmbeddingBag(rows, 4, "sum", l2=0.5, name="bag")
        head = tf.keras.layers.Dense(1, name="head")
        indices = [[0, 0], [0, 1], [1, 0], [2, 0]]
        ids = tf.SparseTensor(indices, tf.constant([3, 5, 3, 17], tf.int64), [3, 2])
        weights = tf.SparseTensor(indices, [0.5, 2.0, 1.0, 3.0], [3, 2])
        for step in range(3):
            with tf.GradientTape() as tape:
                out = head(bag([ids, weights], training=True))
                loss = tf.reduce_sum(tf.square(out - float(step))) + tf.add_n(bag.losses)
            variables = [bag.table, *head.trainable_variables]
            gradients = tape.gradient(loss, variables)
            sparse_gradient = isinstance(gradients[0], tf.IndexedSlices)
            assert sparse_gradient == (rows > EmbeddingBag.DENSE_ROWS)
            optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return [v.numpy() for v in variables]

    expected = train_three_steps(tf.keras.optimizers.Adam(0.1))
    fused = train_three_steps(fused_adam(0.1))
    for want, got in zip(expected, fused, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Rows no batch used moved in neither (Adam's moments start at 0), rows 3, 5, 17 did.
    table_moved = np.abs(fused[0] - train_three_steps(fused_adam(0.0))[0]).sum(axis=1) > 0
    assert np.flatnonzero(table_moved).tolist() == [3, 5, 17]
    # What the optimizer is given: a sparse gradient made dense, repeated rows summed.
    table = tf.Variable(tf.zeros((4, 2)))
    sparse = tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, 4.0]]), tf.constant([1, 1]), [4, 2])
    ((dense, variable),) = fused_adam(0.1).gradient_transformers[0]([(sparse, table)])
    assert isinstance(dense, tf.Tensor) and variable is table
    np.testing.assert_array_equal(dense.numpy(), [[0, 0], [4, 6], [0, 0], [0, 0]])
