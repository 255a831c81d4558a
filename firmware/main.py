# Runs after boot.py. Thin on purpose, and never updated over the link: the
# firmware lives in pod/ of the active slot, which boot.py put on sys.path.
import hal

if not hal.safe_mode():
    from pod import app

    app.main()
