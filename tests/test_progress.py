"""The per-run progress bar of the demos and the shell: step scans count events, fly scans count frames."""

from braggscope.app.beamline.progress import PointProgress, StreamedRunsAsProgress


def _run(progress, documents):
    for name, doc in documents:
        progress(name, doc)


def test_step_scan_counts_primary_events_only(capsys):
    p = PointProgress()
    _run(p, [("start", {"plan_name": "sxdm_map", "num_points": 4}),
             ("descriptor", {"uid": "d1", "name": "primary"}),
             ("descriptor", {"uid": "b1", "name": "baseline"}),
             ("event", {"descriptor": "b1"}),
             ("event", {"descriptor": "d1"}), ("event", {"descriptor": "d1"})])
    assert p._bar.n == 2
    p("stop", {"exit_status": "success"})
    assert "2/4" in capsys.readouterr().out


def test_a_search_without_num_points_counts_the_events_of_its_searches(capsys):
    p = PointProgress()
    _run(p, [("start", {"plan_name": "operando_track"}),
             ("descriptor", {"uid": "b1", "name": "baseline"}), ("event", {"descriptor": "b1"}),
             ("descriptor", {"uid": "m1", "name": "cell_voltage_monitor"}), ("event", {"descriptor": "m1"}),
             ("descriptor", {"uid": "p1", "name": "particle"}),
             ("event", {"descriptor": "p1"}), ("event", {"descriptor": "p1"}),
             ("descriptor", {"uid": "r1", "name": "rocking"}), ("event", {"descriptor": "r1"})])
    assert p._bar.n == 3  # two particle-line points and one rocking point; not the baseline nor the monitor
    p("stop", {"exit_status": "success"})
    assert "3pt" in capsys.readouterr().out


def test_fly_scan_counts_the_frames_its_stream_datums_announce(capsys):
    p = PointProgress()
    docs = [("start", {"plan_name": "sxdm_fly", "num_points": 12}),
            ("descriptor", {"uid": "d1", "name": "primary"}),
            ("descriptor", {"uid": "l1", "name": "lines"})]
    for line in range(2):  # two lines of 4 frames, a file each: image and positions announce the same range
        for resource in ("image", "pcap"):
            docs.append(("stream_datum", {"descriptor": "d1", "stream_resource": f"{resource}{line}",
                                          "indices": {"start": 0, "stop": 4},
                                          "seq_nums": {"start": 4 * line + 1, "stop": 4 * line + 5}}))
        docs.append(("event", {"descriptor": "l1"}))  # the line report: not a point
    _run(p, docs)
    assert p._bar.n == 8
    p("stop", {"exit_status": "success"})
    assert "8/12" in capsys.readouterr().out


def test_the_sessions_table_sees_step_runs_and_a_fly_runs_start_and_stop(capsys):
    seen = []
    wrapped = StreamedRunsAsProgress(lambda name, doc: seen.append(name))
    stream = {"x": {"external": "STREAM:", "source": "s", "shape": [], "dtype": "number"}}
    fly = [("start", {"plan_name": "sxdm_fly", "num_points": 8}),
           ("descriptor", {"uid": "b1", "name": "baseline", "data_keys": {"eta": {"source": "PV:eta"}}}),
           ("event", {"descriptor": "b1"}),
           ("descriptor", {"uid": "d1", "name": "primary", "data_keys": stream}),
           ("stream_resource", {"uid": "r1"}),
           ("stream_datum", {"descriptor": "d1", "stream_resource": "r1", "indices": {"start": 0, "stop": 8},
                             "seq_nums": {"start": 1, "stop": 9}}),
           ("descriptor", {"uid": "l1", "name": "lines", "data_keys": {"row": {"source": "SIM:row"}}}),
           ("event", {"descriptor": "l1"}),
           ("stop", {"exit_status": "success"})]
    _run(wrapped, fly)
    assert seen == ["start", "descriptor", "event", "stop"]  # the table: the run's header and end only
    assert "8/8" in capsys.readouterr().out  # the progress bar counted the flown points
    seen.clear()
    step = [("start", {"plan_name": "sxdm_map", "num_points": 2}),
            ("descriptor", {"uid": "d2", "name": "primary", "data_keys": {"pix": {"source": "PV:pix"}}}),
            ("event", {"descriptor": "d2"}), ("event", {"descriptor": "d2"}), ("stop", {"exit_status": "success"})]
    _run(wrapped, step)
    assert seen == ["start", "descriptor", "event", "event", "stop"]
    assert "/2" not in capsys.readouterr().out  # no bar: the table shows a step scan's points
