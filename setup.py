"""Installs ``greenpatch-early.pth`` next to the package (everything else is in pyproject.toml).

``build_py`` copies the file into the root of the build directory, so a wheel
(``pip install .``) carries it at the top of site-packages; ``editable_wheel``
(``pip install -e .``) writes it into the editable wheel too, whose build
directory is otherwise left out.  The file does nothing unless ``GREENPATCH``
is set: see greenpatch/_early.py.
"""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "greenpatch-early.pth"
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, PTH), os.path.join(self.build_lib, PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


cmdclass = {"build_py": BuildPyWithPth}

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools < 64 has no PEP 660 editable installs
    pass
else:
    class EditableWheelWithPth(editable_wheel):
        def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
            result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
            shutil.copyfile(os.path.join(HERE, PTH), os.path.join(unpacked_wheel, PTH))
            return result

    cmdclass["editable_wheel"] = EditableWheelWithPth

setup(cmdclass=cmdclass)
