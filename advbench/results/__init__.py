"""The results layer: the records of a run merged into per-model bounds (:mod:`.data`),
then rendered: the ranked table every format shares (:mod:`.table`), markdown
(:mod:`.markdown`), the terminal (:mod:`.terminal`), figures (:mod:`.plots`), JSON
(:mod:`.json`) and CSV (:mod:`.csv`); and the result object of the Python API
(:mod:`.evaluation`).
"""
