"""The schema of the beamline configuration: one pydantic model per TOML section.

:func:`braggscope.core.config.load_config` validates the merged configuration
(packaged defaults + site file) against :class:`ConfigSchema` and turns the
first problems into one :class:`~braggscope.core.errors.ConfigError` line
naming the file, the section, the key and what is allowed. Types are strict:
a number given as a string (``pixel_m = "55e-6"``) is refused, an integer is
accepted where a float is expected, and floats must be finite. Every model
forbids unknown keys, so a misspelt key (``distanse_m``) or section
(``[storag]``) is refused instead of silently falling back to the default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ConfigSchema", "SECTIONS"]

Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Pair = Annotated[list[Finite], Field(min_length=2, max_length=2)]
Required = Annotated[str, Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Beamline(_Section):
    name: str
    simulated: bool


class PVs(_Section):
    piezo: Required
    diffractometer: Required
    energy: Required
    detector: Required
    fluorescence: str  # "" = no fluorescence detector
    fly: str = "BSSIM:fly:"  # fly-scan hardware (STAGE:, PCOMP:, PCAP:); "" = none
    machine: str = "BSSIM:machine:"  # ring current, refill countdown, front-end shutter; "" = none
    monitor: str = "BSSIM:mon1:"  # incident-flux monitor counter (AcquireTime, Acquire, Counts_RBV); "" = none
    potentiostat: str = ""  # an operando cell's potentiostat (Voltage_RBV, Protocol, Start, ...); "" = none


class Detector(_Section):
    name: Required
    pixel_m: Positive
    shape: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=2, max_length=2)]
    cch: Pair
    distance_m: Positive
    saturation: Annotated[int, Field(gt=0)]
    write_path: Required
    read_path: Required


class Energy(_Section):
    energy_kev: Positive


class Limits(_Section):
    pix: Pair | None = None
    piy: Pair | None = None
    piz: Pair | None = None
    eta: Pair | None = None
    phi: Pair | None = None
    nu: Pair | None = None
    delta: Pair | None = None
    energy: Pair | None = None

    @field_validator("*")
    @classmethod
    def _ordered(cls, pair):
        if pair is not None and not pair[0] < pair[1]:
            raise ValueError(f"limits must be [low, high] with low < high, got {pair}")
        return pair


class Eccentricity(_Section):
    eta0: Finite
    x: Pair
    y: Pair


class Storage(_Section):
    data_dir: Required
    tiled_uri: str
    api_key: str
    readable_paths: list[str] = []
    catalog_server: Literal["auto", "off"] = "auto"  # local Tiled server shared by every process, or embedded


Triple = Annotated[list[Finite], Field(min_length=3, max_length=3)]


class Cell(_Section):
    """``[simulator.cell]``: the simulated operando cell (simulators/cell.py), served if ``pv.potentiostat`` is set."""

    material: Literal["auto", "nmc622", "lmno"] = "auto"  # auto: the sample's (nmc622 -> nmc622, lmno_bcdi -> lmno)
    active_mass_mg: Positive = 5.0
    resistance_ohm: Positive = 50.0
    x_initial: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 1.0
    relax_time_s: Positive = 3600.0
    gradient_per_c: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.3
    front_width: Positive = 0.04
    time_scale: NonNegative = 1.0  # seconds of the cell's clock per second
    drift_um_per_h: Triple = [0.0, 0.0, 0.0]
    breathing_um: Triple = [0.0, 0.0, 0.0]  # drift per unit of lithium content removed
    update_lithium: Positive = 0.002  # the crystal is rebuilt when its lithium moved by this
    state_file: str = ""  # the cell's autosave; "" = <storage.data_dir>/cell_state.json


class Simulator(_Section):
    sample: Required
    seed: Annotated[int, Field(ge=0)]
    host: Required
    ca_server_port: Annotated[int, Field(ge=0, le=65535)]
    realtime: bool
    probe_fwhm_um: Positive
    peak_rate: NonNegative
    background_rate: NonNegative
    bcdi_peak_rate: NonNegative
    bcdi_beam_fwhm_um: Positive
    xrf_rate: NonNegative
    xrf_background_rate: NonNegative
    renderer: str = ""  # "package.module:function", a renderer factory called with the config
    ring_current_ma: Positive = 200.0  # the beam (simulators/beam.py): current after a refill
    ring_lifetime_h: NonNegative = 0.0  # 0: the current does not decay
    refill_period_s: NonNegative = 0.0  # 0: no refills
    refill_duration_s: Positive = 30.0
    dump_rate_per_h: NonNegative = 0.0  # random beam dumps per hour; 0: none
    dump_duration_s: Positive = 60.0
    monitor_rate: NonNegative = 1.0e6  # incident-flux monitor counts/s at the full current
    velocities: dict[str, Positive] = {}  # motor name -> speed (um/s or deg/s)
    eccentricity: Eccentricity
    cell: Cell = Cell()

    @field_validator("velocities")
    @classmethod
    def _known_motors(cls, value):
        unknown = sorted(set(value) - set(Limits.model_fields))
        if unknown:
            raise ValueError(f"unknown motor(s) {unknown} (allowed: {', '.join(Limits.model_fields)})")
        return value


class Bus(_Section):
    """The document bus (braggscope.app.bus): url "" = no bus."""

    url: str
    stream: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]
    subject: Annotated[str, Field(pattern=r"^[^\s*>]+$")]
    queue_size: Annotated[int, Field(ge=1)]
    high_water: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    spill_dir: Required
    spill_max_mb: Positive


class Analysis(_Section):
    """Where reductions compute: dask_scheduler "" = this computer (reduce sxdm: threads; reduce bcdi: a local
    cluster, "none" its own process), else a scheduler address."""

    dask_scheduler: str


Port = Annotated[int, Field(ge=1, le=65535)]
SERVICES = ("simulator", "tiled", "queue", "http", "live", "web")


class Queue(_Section):
    """Queued operation (braggscope.app.serve.queue_profile, braggscope.app.serve.queue_client)."""

    devices: Literal["epics", "inprocess"]
    redis: Required
    redis_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]+$")]
    url: str
    api_key: str
    observer_key: str = ""  # read-only key of the HTTP server and the page; "" = generated by serve


class Serve(_Section):
    """``braggscope serve`` (braggscope.app.serve.services): services, address and ports."""

    host: Required
    services: list[Literal[SERVICES]]
    tiled_port: Port
    queue_control_port: Port
    queue_info_port: Port
    http_port: Port
    web_port: Port = 60620
    tiled_catalog: str
    state_dir: Required


class Fly(_Section):
    """``[fly]``: the fly-scan hardware (piezo fly stage, trigger unit, detector read-out)."""

    velocity_max_um_s: Positive = 500.0   # fly stage's velocity limit
    accel_time_s: NonNegative = 0.005     # each velocity ramp of a line
    encoder_resolution_um: NonNegative = 0.001
    readout_s: NonNegative = 0.0003       # detector read-out dead time per frame
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    arm_timeout_s: Positive = 1.0


class Beam(_Section):
    """``[beam]``: what acquisitions do when the beam goes (the suspenders, plans/beam.py)."""

    suspend: bool = True                 # suspenders armed in the session, the queue worker and the demos
    current_floor_ma: NonNegative = 10.0  # suspend while the ring current is below this
    shutter: bool = True                 # suspend while the front-end shutter is closed
    resume_delay_s: NonNegative = 2.0    # the beam back this long before the acquisition resumes
    fly_refill_guard: bool = True        # fly maps: a line waits for a refill due before it would end
    refill_margin_s: NonNegative = 0.5   # added to a line's duration when compared with the countdown


class ConfigSchema(_Section):
    """The whole configuration: every section is required (the packaged defaults supply them)."""

    beamline: Beamline
    pv: PVs
    detector: Detector
    energy: Energy
    limits: Limits
    eccentricity: Eccentricity
    storage: Storage
    simulator: Simulator
    bus: Bus
    analysis: Analysis
    queue: Queue
    serve: Serve
    fly: Fly = Fly()
    beam: Beam = Beam()


#: Section name -> its model (for error messages: the allowed keys).
SECTIONS: dict[str, type[BaseModel]] = {
    name: field.annotation for name, field in ConfigSchema.model_fields.items()}
