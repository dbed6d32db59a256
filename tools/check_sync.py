"""Fail if `nbdev_export` would change the library, or README.md is stale: the notebooks are the source of truth."""
import hashlib, subprocess, sys
from pathlib import Path

def snapshot(root='ntk_finetune'):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(root).rglob('*.py'))}

if __name__ == '__main__':
    before = snapshot()
    subprocess.run([str(Path(sys.executable).parent/'nbdev_export')], check=True)
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        sys.exit(f"nbdev_export changed {len(changed)} generated file(s): {', '.join(changed)}. "
                 "Export the notebooks and commit the result.")
    print(f"notebooks and library in sync ({len(after)} modules)")
    subprocess.run([sys.executable, 'tools/make_readme.py', '--check'], check=True)
