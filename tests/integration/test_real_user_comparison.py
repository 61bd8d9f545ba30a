"""Models side by side on real users' later swipes (swiperec.migration.real_users)."""

from datetime import datetime

import pandas as pd
import pytest

from swiperec.features.config import datetime_to_us
from swiperec.migration.real_users import AUC, RECALL, compare_on_real_users


def _test_start_us(transformed) -> int:
    text = transformed.metadata["split_boundaries"]["test_start"].replace("Z", "+00:00")
    return datetime_to_us(datetime.fromisoformat(text))


def test_a_model_against_itself_on_the_real_users_of_the_test_period(
    trained, transformed, snapshot_dir
):
    start = _test_start_us(transformed)
    result = compare_on_real_users(
        snapshot_dir, start, {"candidate": trained.model_dir, "serving": trained.model_dir}
    )
    # The population, counted from the snapshot's decisions table directly.
    decisions = pd.read_parquet(f"{snapshot_dir}/decisions.parquet")
    at = (decisions["created_at"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    later = decisions[at.to_numpy() >= start]
    assert result["users"] == later["user_id"].nunique() > 0
    assert result["swipes"] == len(later)
    assert result["likes"] == int((later["decision"] == "like").sum())
    assert result["reference"] == "serving"
    # Both are the same model: the same figures, no difference, a zero-width interval.
    a, b = result["models"]["candidate"], result["models"]["serving"]
    assert a == b
    assert 0 <= a[AUC] <= 1 and 0 <= a[RECALL] <= 1
    for metric in (AUC, RECALL):
        assert result["differences"]["candidate"][metric] == {"difference": 0.0, "ci95": [0, 0]}
    assert "serving" not in result["differences"]


def test_no_later_swipes_no_users_and_a_bad_reference_is_refused(trained, snapshot_dir):
    result = compare_on_real_users(snapshot_dir, 2**62, {"m": trained.model_dir})
    assert (result["users"], result["swipes"], result["models"]) == (0, 0, {})
    with pytest.raises(ValueError, match="reference 'x'"):
        compare_on_real_users(snapshot_dir, 0, {"m": trained.model_dir}, reference="x")
