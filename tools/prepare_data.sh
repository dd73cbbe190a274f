#!/usr/bin/env bash
# Download and unpack PASCAL VOC 2012 (+ SBD SegmentationClassAug and train_aug.txt) or MS COCO 2014.
#   tools/prepare_data.sh voc  [DEST]   -> DEST/VOCdevkit/VOC2012   (about 2 GB download)
#   tools/prepare_data.sh coco [DEST]   -> DEST/coco/{train2014,val2014,annotations}   (about 19 GB download)
#                                          + SegmentationClass/val2014/*.png GT rendered from the instances
# DEST defaults to $CEP_DATA_ROOT, else the repository's data/ (where the dataset readers look by default).
# Archives go to DEST/downloads/ first; one already there (copied by hand) is used as it is, so on a machine
# without internet: copy the files this script names into DEST/downloads/ and run it again.
# Without internet it prints which files to get and where to put them, and exits 1 (connect timeouts: no hang).
# Mirrors can be set with VOC_URL, SBD_URL, TRAIN_AUG_URL, COCO_BASE_URL.
set -euo pipefail
what="${1:-}"
dest="${2:-${CEP_DATA_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/data}}"
downloads="$dest/downloads"
VOC_URL="${VOC_URL:-http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar}"
# SBD masks converted to VOC indices (DrSleep's tensorflow-deeplab-resnet release, used by most WSSS repositories)
SBD_URL="${SBD_URL:-https://www.dropbox.com/s/oeu149j8qtbs1x0/SegmentationClassAug.zip?dl=1}"
# The 10,582-id train_aug list of IRN (jiwoon-ahn/irn), the one WSSS papers train on
TRAIN_AUG_URL="${TRAIN_AUG_URL:-https://raw.githubusercontent.com/jiwoon-ahn/irn/master/voc12/train_aug.txt}"
COCO_BASE_URL="${COCO_BASE_URL:-http://images.cocodataset.org}"
COCO_FILES=(zips/train2014.zip zips/val2014.zip annotations/annotations_trainval2014.zip)

usage() { echo "usage: tools/prepare_data.sh voc|coco [DEST]   (DEST default: ${CEP_DATA_ROOT:-data/})" >&2; exit 2; }

fetch() {  # fetch URL FILE: keep FILE if present; else download to FILE.part (resumable) and rename when complete
    local url="$1" file="$2"
    [ -s "$file" ] && { echo "[prepare_data] using $file" >&2; return 0; }
    echo "[prepare_data] downloading $url" >&2
    if command -v curl >/dev/null; then
        curl -fL --connect-timeout 20 --speed-limit 1024 --speed-time 60 --retry 2 -C - -o "$file.part" "$url" || return 1
    elif command -v wget >/dev/null; then
        wget --connect-timeout=20 --read-timeout=60 --tries=2 -c -O "$file.part" "$url" || return 1
    else
        echo "[prepare_data] neither curl nor wget is installed" >&2; return 1
    fi
    mv "$file.part" "$file"
}

unzip_into() {  # unzip_into ZIP DIR (skipping macOS metadata)
    if command -v unzip >/dev/null; then unzip -q -o "$1" -x '__MACOSX/*' -d "$2"
    else python3 -m zipfile -e "$1" "$2"; fi
}

manual_steps() {  # manual_steps WHAT "URL -> FILE" ...: print what to fetch by hand, then exit 1
    local name="$1"; shift
    {
        echo
        echo "Could not download $name (no internet, or the host is down)."
        echo "Get these files on a machine with internet and copy them to the paths shown, then run again:"
        printf '  %s\n' "$@"
        echo "  tools/prepare_data.sh $what $dest"
    } >&2
    exit 1
}

prepare_voc() {
    local voc="$dest/VOCdevkit/VOC2012"
    local tar="$downloads/VOCtrainval_11-May-2012.tar" sbd="$downloads/SegmentationClassAug.zip"
    local aug_list="$downloads/train_aug.txt"
    local steps=("$VOC_URL -> $tar" "$SBD_URL -> $sbd" "$TRAIN_AUG_URL -> $aug_list")
    if [ ! -d "$voc/JPEGImages" ]; then
        fetch "$VOC_URL" "$tar" || manual_steps "PASCAL VOC 2012" "${steps[@]}"
        echo "[prepare_data] unpacking $tar" >&2
        tar -xf "$tar" -C "$dest"
    fi
    if [ ! -d "$voc/SegmentationClassAug" ]; then
        fetch "$SBD_URL" "$sbd" || manual_steps "the SBD masks (SegmentationClassAug)" "${steps[@]:1}"
        echo "[prepare_data] unpacking $sbd" >&2
        unzip_into "$sbd" "$voc"
    fi
    fetch "$TRAIN_AUG_URL" "$aug_list" || manual_steps "the train_aug id list" "${steps[@]:2}"
    cp "$aug_list" "$voc/ImageSets/Segmentation/train_aug.txt"
    local n_aug n_masks
    n_aug="$(grep -c . "$voc/ImageSets/Segmentation/train_aug.txt")"
    n_masks="$(find "$voc/SegmentationClassAug" -name '*.png' | wc -l)"
    [ "$n_aug" = 10582 ] || echo "[prepare_data] warning: train_aug.txt has $n_aug ids, expected 10582" >&2
    echo "[prepare_data] VOC 2012 ready in $voc ($n_aug train_aug ids, $n_masks SegmentationClassAug masks)" >&2
}

prepare_coco() {
    local coco="$dest/coco" steps=() file
    for file in "${COCO_FILES[@]}"; do steps+=("$COCO_BASE_URL/$file -> $downloads/$(basename "$file")"); done
    mkdir -p "$coco"
    for file in "${COCO_FILES[@]}"; do
        local name archive="$downloads/$(basename "$file")"
        name="$(basename "$file" .zip)"
        case "$name" in annotations_trainval2014) [ -f "$coco/annotations/instances_val2014.json" ] && continue ;;
                        *) [ -d "$coco/$name" ] && continue ;; esac
        fetch "$COCO_BASE_URL/$file" "$archive" || manual_steps "MS COCO 2014 ($(basename "$file"))" "${steps[@]}"
        echo "[prepare_data] unpacking $archive" >&2
        unzip_into "$archive" "$coco"
    done
    echo "[prepare_data] rendering the val GT masks (segtrain validates on them; a few minutes, resumable)" >&2
    python3 "$(dirname "${BASH_SOURCE[0]}")/render_coco_gt.py" --data-root "$coco" --split val
    echo "[prepare_data] COCO 2014 ready in $coco (train GT PNGs, for scoring train pseudo labels against PNGs, are" \
         "optional: tools/render_coco_gt.py --split train)" >&2
}

case "$what" in
    voc) mkdir -p "$downloads"; prepare_voc ;;
    coco) mkdir -p "$downloads"; prepare_coco ;;
    *) usage ;;
esac
echo "[prepare_data] you can delete $downloads to save space" >&2
