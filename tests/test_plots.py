"""PNG plots: valid, non-empty, different for different data, identical for the same data."""

import numpy as np

from curation_platform.plots import PNG_SIGNATURE, bars, data_uri, histogram, is_png


def test_histograms_are_pngs_that_depend_on_the_data():
    rng = np.random.default_rng(7)
    short = histogram({"web": rng.lognormal(5, 0.5, 300).tolist()}, "Characters", "characters", log_x=True)
    long = histogram({"web": rng.lognormal(8, 0.5, 300).tolist()}, "Characters", "characters", log_x=True)
    for png in (short, long):
        assert png[:8] == PNG_SIGNATURE and len(png) > 2000
    assert short != long
    # No version or timestamp in the file: the same numbers give the same bytes (byte-identical releases).
    again = histogram({"web": np.random.default_rng(7).lognormal(5, 0.5, 300).tolist()}, "Characters",
                      "characters", log_x=True)
    assert again == short


def test_bars_and_empty_inputs_still_give_pngs():
    one = bars(["en", "de"], {"documents": [10, 3]}, "Languages", "documents")
    other = bars(["en", "de"], {"documents": [3, 10]}, "Languages", "documents")
    assert is_png(one) and is_png(other) and one != other
    assert is_png(histogram({}, "Nothing", "x")) and is_png(bars([], {}, "Nothing", "x"))
    assert data_uri(one).startswith("data:image/png;base64,iVBORw0KGgo")
