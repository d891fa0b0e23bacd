import eventlet; eventlet.monkey_patch()  # noqa: E702  (patch before anything else is imported)
import runpy, sys  # noqa: E401,E402
sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")  # noqa: E702
