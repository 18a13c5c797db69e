"""AF monitoring on the device: the beat stream's R-peaks -> sliding RR window -> int8 AF model -> episodes.

A ``BeatSink``. It keeps the last ``window`` RR intervals, runs the model every ``hop`` beats on the window's
RR-irregularity and atrial-activity features (``af_features``; the P wave before each QRS is read from the beat's
window, ``BeatResult.wave``) scaled with the training statistics from the model's task contract,
gates and smooths the decisions exactly as the evaluation does (``af_episodes``: no AF where the P waves before the
normal beats are consistent, nor where ectopic beats explain the irregularity, ``rr_ectopy``; a centred vote, so a
decision is final
``smooth // 2`` windows later) and turns them into episodes. Like the clinical definition of an AF episode, a
run of AF windows counts once it lasts ``min_episode_s`` (30 s): then the ``af_onset`` alert goes out (its time
is the centre of the first AF window, what the evaluation scores); an ``af_offset`` alert with the episode's
duration follows when it ends (or when the stream closes inside one). Shorter runs raise nothing. AF burden
(AF seconds per hour of analysed signal) goes into the device status. A beat of unusable signal quality, an RR
under 0.2 s (a double detection) or over ``GAP_S`` (a gap in the stream) restarts the window: irregularity measured across a gap would be invented.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Callable

import numpy as np

from edge_runtime.af_episodes import check_smooth, ectopy_gated, p_gated
from edge_runtime.af_features import (
    FEATURE_NAMES,
    RR_MIN_S,
    standardise,
    window_features,
)
from edge_runtime.alerts import AlertBuilder
from edge_runtime.atrial_activity import AtrialTracker
from edge_runtime import rr_ectopy
from edge_runtime.rr_ectopy import clean_irregularity, raw_irregularity
from edge_runtime.runtime import BeatResult
from edge_runtime.task_contract import EdgeContract

log = logging.getLogger(__name__)

Predict = Callable[[dict[str, np.ndarray]], np.ndarray]
HOUR_S = 3600.0
#: An RR longer than this is a gap in the beat stream (lead off, lost samples), not a pause: the window restarts.
#: Shorter long pauses (MIT-BIH 232 has 3-6 s sinus pauses) stay in the window, as in training.
GAP_S = 10.0


class AfMonitor:
    """Feed beats in order (``on_beat``); alerts go to ``emit``; ``status`` (a dict) holds the AF fields."""

    def __init__(self, predict: Predict, contract: EdgeContract, builder: AlertBuilder, emit: Callable[[dict], None],
                 model_version: str, input_name: str = "rr_features", status: dict | None = None) -> None:
        if contract.task != "af" or contract.source != "rpeaks":
            raise ValueError(f"AfMonitor needs an 'af' model fed by R-peaks; this model's contract is task "
                             f"{contract.task!r} from {contract.source!r}")
        pre = contract.preprocessing
        names = tuple(pre.get("feature_names", ()))
        if names != FEATURE_NAMES:
            raise ValueError(f"the model was trained on features {names}; this device computes {FEATURE_NAMES}: "
                             "export the model again with this edge runtime's version")
        self.window, self.hop = int(contract.window or 0), int(pre["hop"])
        self.smooth, self.threshold = check_smooth(int(pre["smooth"])), float(pre["threshold"])
        self.min_episode_s = float(pre.get("min_episode_s", 0.0))
        # The P-wave gate (``af_episodes.p_gated``); a contract without one (an older export) gates nothing.
        self.p_gate = float(pre.get("p_gate", np.inf))
        # The ectopy gate (``af_episodes.ectopy_gated``); absent in older exports: 0, no gate.
        self.ectopy_gate = float(pre.get("ectopy_gate", 0.0))
        if self.ectopy_gate and pre.get("ectopy_feature", rr_ectopy.NAME) != rr_ectopy.NAME:
            raise ValueError(f"the model's ectopy gate is on {pre['ectopy_feature']!r}; this device computes "
                             f"{rr_ectopy.NAME!r}: export the model again with this edge runtime's version")
        self._p_index = FEATURE_NAMES.index(pre.get("p_gate_feature", FEATURE_NAMES[-1]))
        self._mean = np.asarray(pre["feature_mean"], np.float32)
        self._std = np.asarray(pre["feature_std"], np.float32)
        self.predict, self.builder, self.emit = predict, builder, emit
        self.model_version, self.input_name = model_version, input_name
        self.status = status if status is not None else {}
        self._times: deque[float] = deque(maxlen=self.window + 1)
        self._samples: deque[int] = deque(maxlen=self.window + 1)
        self._p_corr: deque[float] = deque(maxlen=self.window + 1)
        self._normal: deque[bool] = deque(maxlen=self.window + 1)
        self._atrial = AtrialTracker()  # its templates span restarts: P and QRS shapes outlive a gap
        self._since = 0
        # Decisions waiting for their later neighbours: (probability, flag, span start, span end, beat sample, hr)
        self._pending: deque[tuple[float, bool, float, float, int, float]] = deque()
        self._votes: deque[bool] = deque(maxlen=self.smooth)
        self._episode: dict | None = None  # the open run of AF windows (start, spans, confirmed, ...)
        self.episodes: list[tuple[float, float]] = []
        self.af_s_by_hour: dict[int, float] = {}
        self.analysed_s_by_hour: dict[int, float] = {}
        self.restarts = 0
        self._publish_status()

    # ------------------------------------------------------------------ BeatSink
    def on_beat(self, beat: BeatResult) -> None:
        if not beat.usable or not np.isfinite(beat.time_s):
            self._restart("unusable beat")
            return
        if self._times:
            rr = beat.time_s - self._times[-1]
            if not RR_MIN_S <= rr <= GAP_S:
                self._restart(f"RR {rr:.3f} s outside {RR_MIN_S}-{GAP_S} s")
        self._times.append(float(beat.time_s))
        self._samples.append(int(beat.sample))
        # A beat without a window (none at a stream's ends in training; rpeak_beats gives every beat one) shows no P.
        p_corr, normal = (0.0, False) if beat.wave is None else self._atrial.observe(beat.wave)
        self._p_corr.append(p_corr)
        self._normal.append(normal)
        self._since += 1
        if len(self._times) == self.window + 1 and self._since >= self.hop:
            self._since = 0
            self._decide()

    def close(self) -> None:
        """Finalise the decisions still waiting (the vote over the windows that exist) and end an open episode."""
        self._drain(final=True)
        if self._episode is not None:
            self._close_episode()
        self._publish_status()

    # ------------------------------------------------------------------ internals
    def _restart(self, why: str) -> None:
        if self._times:
            self.restarts += 1
            log.debug("AF window restarted: %s", why)
        self._times.clear()
        self._samples.clear()
        self._p_corr.clear()
        self._normal.clear()
        self._since = 0

    def _decide(self) -> None:
        t = np.asarray(self._times)
        rr = np.diff(t)
        raw = window_features(rr, np.asarray(self._p_corr)[1:], np.asarray(self._normal)[1:])
        prob = float(np.asarray(self.predict({self.input_name: standardise(raw[None, :], self._mean, self._std)}))[0, 1])
        is_af = bool(p_gated(prob, raw[self._p_index], self.threshold, self.p_gate))
        if is_af:  # the window's beats: len(rr) + 1 normal-QRS flags, as ``rr_ectopy.window_irregularity`` reads
            irregularity = (clean_irregularity(rr, np.asarray(self._normal)), raw_irregularity(rr))
            is_af = bool(ectopy_gated(is_af, irregularity, self.ectopy_gate))
        centre = self.window // 2
        lo, hi = centre - self.hop // 2, centre + self.hop - self.hop // 2
        self._pending.append((prob, is_af, float(t[lo]), float(t[hi]), self._samples[lo],
                              60.0 / float(np.mean(rr))))
        self._drain(final=False)

    def _drain(self, final: bool) -> None:
        """Finalise every pending decision whose ``smooth // 2`` later neighbours are known (all when ``final``)."""
        half = self.smooth // 2
        while self._pending and (final or len(self._pending) > half):
            flags = [p[1] for p in list(self._pending)[:half + 1]]
            prob, _, start, end, sample, hr = self._pending[0]
            window = (list(self._votes)[-half:] if half else []) + flags
            is_af = 2 * sum(window) > len(window)
            self._votes.append(self._pending.popleft()[1])
            self._account(start, end, is_af=False)  # analysed time; AF time only once an episode is confirmed
            if is_af:
                self._extend_episode(start, end, sample, prob, hr)
            elif self._episode is not None:
                self._close_episode()
        self._publish_status()

    def _extend_episode(self, start: float, end: float, sample: int, prob: float, hr: float) -> None:
        """Add an AF span; the episode is confirmed (onset alert, AF burden) once it lasts ``min_episode_s``."""
        if self._episode is None:
            self._episode = {"start": start, "sample": sample, "prob": prob, "hr": hr, "spans": [], "confirmed": False}
        ep = self._episode
        ep["spans"].append((start, end))
        ep["end"] = end
        if ep["confirmed"]:
            self._account(start, end, is_af=True)
        elif end - ep["start"] >= self.min_episode_s:
            ep["confirmed"] = True
            for a, b in ep["spans"]:
                self._account(a, b, is_af=True)
            self.emit(self._alert("af_onset", ep["start"], ep["sample"], ep["prob"], ep["hr"]))

    def _close_episode(self) -> None:
        """End the open episode: an offset alert if it was confirmed; a shorter run of AF windows is dropped."""
        ep, self._episode = self._episode, None
        if not ep["confirmed"]:
            return
        self.episodes.append((ep["start"], ep["end"]))
        alert = self._alert("af_offset", ep["start"], ep["sample"], ep["prob"], ep["hr"])
        alert["af_duration_s"] = round(ep["end"] - ep["start"])
        self.emit(alert)

    def _account(self, start: float, end: float, is_af: bool) -> None:
        hour = int(start // HOUR_S)
        book = self.af_s_by_hour if is_af else self.analysed_s_by_hour
        book[hour] = book.get(hour, 0.0) + (end - start)

    def _alert(self, kind: str, start: float, sample: int, prob: float, hr: float) -> dict:
        first = BeatResult(sample, start, "AF", prob, hr, self.model_version)
        return self.builder.event_at(kind, first, self.window, "AF", prob, hr)

    def burden(self, hour: int) -> float | None:
        """Share of the analysed signal of stream hour ``hour`` that was AF (None: nothing analysed)."""
        analysed = self.analysed_s_by_hour.get(hour, 0.0)
        return None if analysed <= 0 else self.af_s_by_hour.get(hour, 0.0) / analysed

    def _publish_status(self) -> None:
        hours = sorted(self.analysed_s_by_hour)
        confirmed = self._episode is not None and self._episode["confirmed"]
        self.status.update({
            "af_state": int(confirmed), "af_episodes": len(self.episodes) + int(confirmed),
            "af_seconds": round(sum(self.af_s_by_hour.values())), "af_window_restarts": self.restarts,
        })
        if hours:  # AF burden of the current hour of signal, in permille (status JSON holds integers)
            self.status["af_burden_permille_hour"] = round(1000 * self.burden(hours[-1]))
