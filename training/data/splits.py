"""Record lists of the MIT-BIH Arrhythmia Database and the de Chazal (2004) inter-patient split."""
from __future__ import annotations

ALL_RECORDS: tuple[str, ...] = (
    "100", "101", "102", "103", "104", "105", "106", "107", "108", "109", "111", "112", "113", "114",
    "115", "116", "117", "118", "119", "121", "122", "123", "124", "200", "201", "202", "203", "205",
    "207", "208", "209", "210", "212", "213", "214", "215", "217", "219", "220", "221", "222", "223",
    "228", "230", "231", "232", "233", "234",
)

#: Records with a pacemaker: excluded by AAMI EC57 recommendations.
PACED: tuple[str, ...] = ("102", "104", "107", "217")

#: Training set of de Chazal, O'Dwyer & Reilly, IEEE TBME 51(7), 2004.
DS1: tuple[str, ...] = (
    "101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124",
    "201", "203", "205", "207", "208", "209", "215", "220", "223", "230",
)

#: Test set of de Chazal 2004: never used for training or model selection.
DS2: tuple[str, ...] = (
    "100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212",
    "213", "214", "219", "221", "222", "228", "231", "232", "233", "234",
)

NON_PACED: tuple[str, ...] = tuple(r for r in ALL_RECORDS if r not in PACED)
