"""Export: each tower as a SavedModel that takes raw features, and as a `.keras` file.

    model_dir/
      user_tower/          SavedModel: serialized raw tf.Examples -> {"embedding": [B, 768],
                           "rank_bias": [B]}
      video_tower/         SavedModel: the same for videos -> {"embedding", "rank_bias",
                           "rank_scale"}: the video's ranking terms (`VideoRanking`)
      user_tower.keras     the tower over *transformed* features (for fine-tuning, inspection)
      video_tower.keras
      user_ranker.keras    the ranking terms over transformed features
      video_ranker.keras
      model_card.json

The SavedModels carry their TFT graph (`transform_features_layer`), so a caller gives what it
has (a user's counts and lists, a video's title and genres) and gets the embedding training
would have computed: the same tokenisation, vocabularies and scaling. Raw features are
`user_feature_spec()` and `video_row_spec()` of `swiperec.features.preprocessing`; a tf.Example
is the one input type a signature can take that holds variable-length lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import tensorflow as tf

from swiperec.features.preprocessing import user_feature_spec, video_row_spec
from swiperec.model.towers import USER_TOWER_INPUTS, VIDEO_TOWER_INPUTS

TOWERS = ("user_tower", "video_tower")
RAW_SPECS = {"user_tower": user_feature_spec, "video_tower": video_row_spec}
TOWER_INPUTS = {"user_tower": USER_TOWER_INPUTS, "video_tower": VIDEO_TOWER_INPUTS}


@dataclass(frozen=True)
class _Models:
    """A tower and its ranker, held where TensorFlow's object tracking does not look: a module
    attribute that is a Keras model, or a list, tuple or dict holding one, would be tracked."""

    tower: tf.keras.Model
    ranker: tf.keras.Model


def _state(*models) -> list:
    """The models' variables and resources (the video id lookup's hash table), once each: what
    a function calling them captures, which a SavedModel must track."""
    kinds = (tf.Variable, tf.saved_model.experimental.TrackableResource)
    found = {}
    for model in models:
        for item in tf.train.TrackableView(model).descendants():
            if isinstance(item, kinds):
                found.setdefault(id(item), item)
    return list(found.values())


class ServingTower(tf.Module):
    """A tower and its ranking terms behind their TFT graph: serialized raw tf.Examples ->
    768-d embeddings, "rank_bias" and (videos) "rank_scale"."""

    def __init__(self, tower, ranker, tft_output, raw_spec: dict, inputs: tuple):
        super().__init__(name=tower.name)
        # The SavedModel holds the signature and the state it reads, not the tower and ranker as
        # Keras objects: saved as such they would have every layer's call traced again (a small
        # training run's export took 3.7x as long, its files were twice the size, and loading
        # took 2x), for objects no caller loads. The `.keras` files keep the models. (TFT's
        # layer is a Keras model too, saved as one: it tracks the transform graph's assets.)
        self._models = _Models(tower, ranker)
        self.variables_and_tables = _state(tower, ranker)
        self.tft_layer = tft_output.transform_features_layer()
        self._raw_spec = raw_spec
        self._inputs = inputs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        """[B] serialized tf.Examples of raw features -> {"embedding": [B, 768] float32,
        "rank_bias": [B], and for videos "rank_scale": [B]}."""
        raw = tf.io.parse_example(examples, self._raw_spec)
        transformed = self.tft_layer(raw)
        features = {name: transformed[name] for name in self._inputs}
        out = {"embedding": self._models.tower(features, training=False)}
        ranking = self._models.ranker(features, training=False)
        if ranking.shape.rank == 2:  # a video's (bias, scale)
            out["rank_bias"], out["rank_scale"] = ranking[:, 0], ranking[:, 1]
        else:
            out["rank_bias"] = ranking
        return out


def export_towers(model, tft_outputs: dict, model_dir: str) -> dict[str, str]:
    """Write both towers of a `TwoTowerModel` with their ranking terms to `model_dir` (see the
    module docstring); returns name -> path.

    `tft_outputs`: {"user": TFTransformOutput, "video": TFTransformOutput}.
    """
    paths = {}
    for kind in ("user", "video"):
        name = f"{kind}_tower"
        tower, ranker = getattr(model, name), getattr(model, f"{kind}_ranker")
        serving = ServingTower(tower, ranker, tft_outputs[kind], RAW_SPECS[name](),
                               TOWER_INPUTS[name])  # fmt: skip
        path = os.path.join(model_dir, name)
        tf.saved_model.save(serving, path, signatures={"serving_default": serving.serve})
        tower.save(os.path.join(model_dir, f"{name}.keras"))
        ranker.save(os.path.join(model_dir, f"{kind}_ranker.keras"))
        paths[name] = path
    return paths


def load_serving_tower(path: str):
    """A loaded SavedModel tower's signature: call it with `examples=` [B] serialized raw
    tf.Examples; it returns {"embedding": [B, 768], "rank_bias": [B], ...} (models exported
    before the ranking terms return the embedding alone)."""
    return tf.saved_model.load(path).signatures["serving_default"]


def load_keras_tower(path: str) -> tf.keras.Model:
    """A `.keras` tower or ranker (over transformed features)."""
    import swiperec.model.layers  # noqa: F401  (registers the custom layers)

    return tf.keras.models.load_model(path, compile=False)


def serialize_raw(rows: list[dict], spec: dict) -> list[bytes]:
    """Raw feature dicts (str / float / int or lists of them) -> serialized tf.Examples of
    `spec`, the input the SavedModel towers take. ValueError when a row holds None.

    The rows become one Arrow record batch, as the transform's inputs do (`to_record_batch`),
    which tfx_bsl's C++ encoder turns into tf.Examples: ~5 us a video row in a batch of
    4,096, where building each row's `tf.train.Example` in Python took ~27 (a fifth of a
    refresh's video embedding); one row alone takes ~80 us."""
    from tfx_bsl.coders import example_coder

    from swiperec.features.raw_features import arrow_schema, to_record_batch

    batch = to_record_batch(rows, arrow_schema(spec))
    return example_coder.RecordBatchToExamplesEncoder().encode(batch)
