"""How a MuJoCo scene is seen: its fixed camera moved by a viewpoint condition, its lights scaled by a factor.

Shared by the MuJoCo tasks (Cube, Reacher). Both edit the compiled model in place
(``cam_pos``/``cam_quat`` of the rendering camera; ``light_diffuse``/``light_ambient`` and the
headlight) and keep the original values, so the default view and lighting are restored
exactly — bit for bit, hence the same frames. Nothing here touches the physics.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import mujoco


def _turn_about_vertical(degrees: float) -> np.ndarray:
    """The rotation matrix (3, 3) of a turn by ``degrees`` about the world's z axis, counter-clockwise from above."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


class MovableCamera:
    """A fixed camera of the world body, moved as ``Condition``'s camera fields say (tasks/conditions.py).

    The scene's centre is where the camera's optical axis meets the floor (``z = floor``);
    ``depth`` is the camera's distance to it. ``move(shift, rotate, zoom)``, from the
    default pose: the camera orbits the centre about the vertical by ``-rotate`` degrees (so
    the floor turns counter-clockwise in the frame), dollies to ``depth / zoom`` from it, then
    translates in its image plane, left and up, by ``shift`` times the width a pixel spans at
    the centre's depth — so the centre moves ``shift`` px down and right, nearer points more.
    """

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, name: str, image_size: int, floor: float = 0.0):
        import mujoco

        self.model, self.data, self.image_size = model, data, image_size
        self.id = model.camera(name).id
        if model.cam_bodyid[self.id] != 0 or model.cam_mode[self.id] != mujoco.mjtCamLight.mjCAMLIGHT_FIXED:
            raise ValueError(f"camera {name!r} must be a fixed camera of the world body to be moved about the scene")
        self.default_position = model.cam_pos[self.id].copy()  # (3,) world frame: the parent is the world
        self.default_quat = model.cam_quat[self.id].copy()  # (4,) w, x, y, z
        self.default_rotation = np.empty(9)
        mujoco.mju_quat2Mat(self.default_rotation, self.default_quat)
        self.default_rotation = self.default_rotation.reshape(3, 3)  # columns: the camera's right, up, backward
        forward = -self.default_rotation[:, 2]
        if not forward[2] < 0:
            raise ValueError(f"camera {name!r} must look down at the floor to have a scene centre")
        self.depth = float((floor - self.default_position[2]) / forward[2])  # metres along the optical axis
        self.centre = self.default_position + self.depth * forward  # (3,) the scene's centre, on the floor
        self.fovy = float(model.cam_fovy[self.id])  # degrees, vertical (the frames are square)

    def metres_per_pixel(self, depth: float) -> float:
        """The width one pixel spans at ``depth`` metres in front of the camera."""
        return 2 * depth * math.tan(math.radians(self.fovy) / 2) / self.image_size

    def pose(self, shift: float, rotate: float, zoom: float) -> tuple[np.ndarray, np.ndarray]:
        """The moved camera's position (3,) and rotation (3, 3), columns its right, up and backward axes."""
        turn = _turn_about_vertical(-rotate)
        rotation = turn @ self.default_rotation
        position = self.centre + turn @ (self.default_position - self.centre) / zoom
        step = shift * self.metres_per_pixel(self.depth / zoom)
        position = position + step * (-rotation[:, 0] + rotation[:, 1])  # left and up: the scene moves down-right
        return position, rotation

    def move(self, shift: float, rotate: float, zoom: float) -> None:
        """Place the camera (zero, zero and one: its default pose, exactly) and update the data's camera pose."""
        import mujoco

        if shift == 0 and rotate == 0 and zoom == 1:
            position, quat = self.default_position, self.default_quat
        else:
            position, rotation = self.pose(shift, rotate, zoom)
            quat = np.empty(4)
            mujoco.mju_mat2Quat(quat, rotation.ravel())
        self.model.cam_pos[self.id] = position
        self.model.cam_quat[self.id] = quat
        mujoco.mj_camlight(self.model, self.data)  # cam_xpos / cam_xmat, which rendering reads

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel (col, row) coordinates of world points (..., 3) as the camera now sees them, pixel centres at +0.5."""
        position = self.data.cam_xpos[self.id]
        rotation = self.data.cam_xmat[self.id].reshape(3, 3)
        local = (np.asarray(points, dtype=np.float64) - position) @ rotation  # (..., 3): right, up, backward
        focal = self.image_size / 2 / math.tan(math.radians(self.fovy) / 2)  # pixels
        col = self.image_size / 2 + focal * local[..., 0] / -local[..., 2]
        row = self.image_size / 2 - focal * local[..., 1] / -local[..., 2]
        return np.stack([col, row], axis=-1)


class SceneLights:
    """Every light of a MuJoCo model and its headlight, dimmed or brightened by one factor (default 1)."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        self.diffuse, self.ambient = model.light_diffuse.copy(), model.light_ambient.copy()  # (L, 3) each
        self.head_diffuse = model.vis.headlight.diffuse.copy()
        self.head_ambient = model.vis.headlight.ambient.copy()
        self.intensity = 1.0

    def scale(self, intensity: float) -> None:
        """Diffuse and ambient light of every source at ``intensity`` times the scene's own (1: exactly it)."""
        self.intensity = float(intensity)
        self.model.light_diffuse[:] = self.diffuse * self.intensity
        self.model.light_ambient[:] = self.ambient * self.intensity
        self.model.vis.headlight.diffuse[:] = self.head_diffuse * self.intensity
        self.model.vis.headlight.ambient[:] = self.head_ambient * self.intensity
