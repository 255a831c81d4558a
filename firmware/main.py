# Runs after boot.py. Thin on purpose: the firmware lives in pod/.
import hal

if not hal.safe_mode():
    from pod import app

    app.main()
