"""The privacy and robustness benchmark (`pulsewire privacy-bench`) -> privacy.json + privacy.md.

(a) DS2 macro F1 against ε ∈ {1, 4, 8, ∞} at δ = 1e-6 (DP-FedAvg: clip C, Gaussian noise calibrated with the
    RDP accountant for every device in every round, q = 1), on the patient split and with each patient cut
    into K sub-devices (``subpatient:K``: more, smaller devices, so the noise on the mean shrinks; ε is then
    per sub-device, and a patient's own guarantee is the group guarantee of K devices, weaker). A sub-device
    runs K local epochs over its 1/K of the beats, as many steps as a whole patient's device: K times the
    compute of the patient split (a 20-round K = 16 run takes about 10 minutes on one core).
    Distributed DP under secure aggregation adds the same total noise to the sum (up to fixed-point
    rounding), so these numbers stand for it too.
(b) Secure-aggregation overhead over a real Mosquitto: bytes and seconds per round against a plain FedAvg
    round, at 22 and 100 devices with a model-sized update, and rounds in which 30 % drop after their masked
    input or before it (``tools.secagg_overhead``, ``training.federated.secagg_round``).
(c) Attack x defence x attacker share: every attack in ``training.federated.attacks`` against FedAvg and the
    robust strategies at 10/20/30 % attackers, DS2 macro F1, and each defence's clean run.
(d) The accountant on the participation pulsewire sees (``tools.privacy_accounting``, no training): devices
    dropping, secure aggregation's varying inputs, device-side Poisson sampling, and dp-accounting's reference.

(a) and (c) run in process (``training.federated.simulation``) for each seed of ``--seeds`` (inter-patient results
swing with the seed, so the report gives mean ± std over the seeds, and a target counts on the mean), 20 rounds
of one local epoch (the settings are written into the results). Attacks draw their noise from a random stream of
their own, so an attacked run's honest devices train exactly as in the clean run of the same seed and defence:
the difference is the attack's. ``--jobs 2`` runs seeds in parallel worker processes. The round is selected
on held-out DS1 patients; DS2 is scored once per run (float32 Keras model). Every finished run is written to a
checkpoint JSON at once, keyed by seed (``s{seed}/...``); a restarted bench skips what it holds.
"""
