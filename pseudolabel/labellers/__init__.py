"""Stage-one labellers other than CEP's Skip-CAM + SAM (``pseudolabel/pipeline.py``): SAM 3 prompted with the image
tags (``sam3_text``)."""
