#!/bin/bash
# Rebuild one fixture with the real code of an earlier build of main:
#   git worktree add /tmp/wt-BUILD BUILD
#   tests/data/upgrade/build.sh BUILD /tmp/wt-BUILD yes|no   (yes: captions on, for builds that have them)
# Two synthetic photos (a.jpg with the person's keyword Anna, b.jpg with GPS near Florence) tagged
# by that build's `scan` with the shapes model (threshold 0.36, sync), then the database (WAL
# checkpointed, vacuumed) and the tagged photos are copied here as tests/data/upgrade/BUILD/.
set -e
build=$1; tree=$2; caps=$3
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../../.." && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d); mkdir -p "$work/lib" "$work/data" "$work/home"
export HOME=$work/home XDG_CONFIG_HOME=$work/home/.config XDG_DATA_HOME=$work/home/.local/share \
       XDG_CACHE_HOME=$work/home/.cache XDG_STATE_HOME=$work/home/.local/state
cd "$work"
"$py" -c "import sys; sys.path.insert(0, '$tree/scripts'); from synthetic import make_photo
make_photo('red', 'circle', 1).save('lib/a.jpg', quality=85)
make_photo('green', 'square', 2).save('lib/b.jpg', quality=85)"
exiftool -q -overwrite_original -IPTC:Keywords=Anna -XMP-dc:Subject=Anna lib/a.jpg
exiftool -q -overwrite_original -GPSLatitude=43.7731 -GPSLatitudeRef=N -GPSLongitude=11.256 \
         -GPSLongitudeRef=E lib/b.jpg
printf 'red\ngreen\ncircle\nsquare\n' > tags.txt
cat > config.toml <<C
watch = ["$work/lib"]
tags = "tags.txt"
database = "$work/data/tagwatch.db"
[model]
name = "$repo/tests/data/shapes-clip.json"
pretrained = "$repo/tests/data/shapes-clip.safetensors"
[tagging]
threshold = 0.36
mode = "sync"
C
if [ "$caps" = yes ]; then cat >> config.toml <<C
[captions]
enabled = true
name = "$repo/tests/data/shapes-coca.json"
pretrained = "$repo/tests/data/shapes-coca.safetensors"
prefix = "caption"
C
fi
PYTHONPATH=$tree/daemon "$py" -m tagwatch --config config.toml scan lib
sqlite3 data/tagwatch.db "PRAGMA wal_checkpoint(TRUNCATE)" > /dev/null
sqlite3 data/tagwatch.db "VACUUM"
mkdir -p "$here/$build"
cp data/tagwatch.db lib/a.jpg lib/b.jpg "$here/$build/"
echo "$build: schema $(sqlite3 data/tagwatch.db 'PRAGMA user_version')"
rm -rf "$work"
