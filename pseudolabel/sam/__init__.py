"""SAM refinement of Y0: grid prompts, mask selection, the δ filter and the merge (``refine``), the SAM registry and
checkpoints (``models``), and the batched single-point predictor with its shared-image mask decoder (``predictor``,
``decoder``)."""
