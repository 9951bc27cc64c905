"""
Fetching a data file from its public home, for the data scripts' download
paths (taken only when asked for, or when no local copy is given).
"""
import os
import urllib.error
import urllib.request


def fetch(url, path, hint):
    """
    Writes the bytes at url to path, through a temporary file so that a
    broken transfer leaves no partial file. Raises OSError naming the url and
    hint (what to do instead) when it cannot.
    """
    print(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            data = r.read()
    except (urllib.error.URLError, OSError) as e:
        raise OSError(f"could not download {url} ({e}); {hint}") from None
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
