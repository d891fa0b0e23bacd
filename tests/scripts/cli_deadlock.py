# Waits for an event that nothing can ever set.
import threading

print("waiting", flush=True)
threading.Event().wait()
print("never reached")
