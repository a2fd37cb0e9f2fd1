import sys
from pathlib import Path

# tests/reference.py and other helpers are imported by name.
sys.path.insert(0, str(Path(__file__).parent))
