"""``LoadShardLabel``: the mmseg loading transform that takes a training label from the stage-one shards."""
from __future__ import annotations

from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from pseudolabel.storage.format import REFINED
from pseudolabel.storage.shards import ShardSet, open_shards


@TRANSFORMS.register_module()
class LoadShardLabel(BaseTransform):
    """Put the shard label of ``results['shard_id']`` into ``results['gt_seg_map']`` (as ``LoadAnnotations`` does).

    Expects ``shard_id``, ``shards_dir`` and ``label_kind`` in ``results`` (set by ``ShardPseudoLabelDataset``).
    Shards are opened lazily, once per process, so every data-loader worker has its own HDF5 handles; they are not
    verified again (the dataset verified them; a damaged chunk still fails its checksum when read).
    """

    def __init__(self) -> None:
        self._shards: dict[str, ShardSet] = {}

    def __getstate__(self) -> dict:
        return {"_shards": {}}  # workers started by spawn open their own files

    def _open(self, directory: str) -> ShardSet:
        if directory not in self._shards:
            self._shards[directory] = open_shards(directory, verify=False)
        return self._shards[directory]

    def transform(self, results: dict) -> dict:
        labels = self._open(results["shards_dir"]).read_label(results["shard_id"], results.get("label_kind", REFINED))
        image_shape = results.get("ori_shape", results.get("img_shape"))
        if image_shape is not None and tuple(image_shape[:2]) != labels.shape:
            raise ValueError(f"shard label of '{results['shard_id']}' is {labels.shape} but the image "
                             f"{results.get('img_path')} is {tuple(image_shape[:2])}; the shards were made from "
                             f"different images: regenerate them or fix data_root")
        results["gt_seg_map"] = labels
        results["seg_fields"].append("gt_seg_map")
        return results
