"""``storage.sources``: which files and rows lie behind a catalog array, as the catalog describes them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from braggscope.storage.sources import CatalogArray, array_source, local_source, resource_path, uri_path


class _Array:
    """The part of a Tiled array client the sources module reads."""

    def __init__(self, sources):
        self._sources = sources

    def include_data_sources(self):
        return self

    def data_sources(self):
        return self._sources


def _hdf5(paths, **parameters):
    assets = [SimpleNamespace(data_uri=f"file://localhost{p}", num=i) for i, p in enumerate(paths)]
    return SimpleNamespace(mimetype="application/x-hdf5", parameters=parameters, assets=assets[::-1])


def test_files_dataset_rows_and_swmr(tmp_path):
    files = [tmp_path / "a b.h5", tmp_path / "b.h5"]
    for f in files:
        f.write_bytes(b"")
    found = array_source(_Array([_hdf5(files, dataset="/x", slice=[2, 0, 1], swmr=True)]))
    assert found.paths == files and found.dataset == "/x" and found.rows == [2, 0, 1] and found.swmr
    assert local_source(_Array([_hdf5(files)])).rows is None  # no slice: the first rows
    assert array_source(_Array([_hdf5(files)])).dataset == "/entry/data/data"


@pytest.mark.parametrize("text, rows", [(":6", None), ("0:6", None), ("2:5", [2, 3, 4])])
def test_text_slices_the_catalog_writes(tmp_path, text, rows):
    assert array_source(_Array([_hdf5([tmp_path / "f.h5"], slice=text)])).rows == rows


def test_what_is_left_to_the_catalog(tmp_path):
    there = tmp_path / "f.h5"
    there.write_bytes(b"")
    assert array_source(_Array([_hdf5([there], slice="::2")])) is None  # a slice not followed here
    assert array_source(_Array([SimpleNamespace(mimetype="application/x-zarr", parameters={}, assets=[])])) is None
    assert array_source(_Array([_hdf5([there]), _hdf5([there])])) is None
    missing = array_source(_Array([_hdf5([tmp_path / "gone.h5"])]))
    assert missing is not None and not missing.local  # named by the readers, not read
    assert local_source(_Array([_hdf5([tmp_path / "gone.h5"])])) is None

    class Remote:
        def include_data_sources(self):
            raise RuntimeError("an older server")

    assert array_source(Remote()) is None


def test_document_paths():
    assert uri_path("file://localhost/data/a%20b.h5") == Path("/data/a b.h5")
    assert uri_path("file:///data/x.h5") == Path("/data/x.h5")
    assert uri_path("http://host/data/x.h5") is None and uri_path("file://otherhost/x.h5") is None
    assert resource_path({"root": "/data", "resource_path": "det/x.h5"}) == Path("/data/det/x.h5")
    assert resource_path({"root": "", "resource_path": "/abs/x.h5"}) == Path("/abs/x.h5")


def test_catalog_array_fetches_what_is_sliced():
    asked = []

    class Client:
        shape, dtype = (3, 2, 2), np.dtype("uint16")

        def __getitem__(self, key):
            asked.append(key)
            return np.zeros((1, 2, 2), np.uint16)

    array = CatalogArray(Client())
    assert array.shape == (3, 2, 2) and array.ndim == 3 and array.dtype == np.uint16
    assert array[1:2].shape == (1, 2, 2) and asked == [slice(1, 2)]


def test_a_run_whose_frames_never_reached_the_catalog_is_named():
    from braggscope.storage.frames import frames_node

    run = SimpleNamespace(metadata={"start": {"uid": "3f2a"}, "stop": {"exit_status": "fail", "reason": "writer died"}})
    with pytest.raises(ValueError, match=r"^run 3f2a: no mpx1x4_image frames in the catalog .*'fail': writer died"):
        frames_node({"pix": 1}, "mpx1x4_image", run)
    assert frames_node({"mpx1x4_image": 7}, "mpx1x4_image", run) == 7
