"""``/admin/faults/{participant}``: switch a simulated provider outage on or off.

The participants are the application's, so the router is built for it: the OpenAPI
document names exactly the participants that exist. (No ``from __future__ import
annotations`` here: FastAPI must see the path parameter's type, a local, unquoted.)
"""

import re
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Path

from sagaway.services.api.dependencies import AdminDep, SessionDep
from sagaway.services.api.responses import BODY_ERRORS, UNAUTHORIZED, UNAVAILABLE, invalid
from sagaway.services.api.schemas import FaultUpdate, FaultView
from sagaway.services.ops import faults
from sagaway.services.ops.audit import record_action


def faults_router(participants: Sequence[str]) -> APIRouter:
    """The fault switch routes of ``participants``."""
    router = APIRouter(
        prefix="/admin", tags=["admin"], responses={401: UNAUTHORIZED, 503: UNAVAILABLE}
    )
    pattern = "^(" + "|".join(re.escape(p) for p in participants) + ")$"
    participant_param = Annotated[str, Path(pattern=pattern)]

    @router.put(
        "/faults/{participant}",
        response_model=FaultView,
        responses={**BODY_ERRORS, 422: invalid("Unknown participant or mode")},
    )
    async def put_fault(
        participant: participant_param, body: FaultUpdate, session: SessionDep, actor: AdminDep
    ) -> FaultView:
        """Simulate a provider outage (``unavailable``) or end it (``ok``)."""
        async with session.begin():
            await faults.set_mode(session, participant, faults.FaultMode(body.mode))
            await record_action(
                session, actor=actor, action="fault.set", target=participant, detail=body.mode
            )
        return FaultView(participant=participant, mode=body.mode)

    @router.get(
        "/faults/{participant}",
        response_model=FaultView,
        responses={422: invalid("Unknown participant")},
    )
    async def get_fault(
        participant: participant_param, session: SessionDep, _: AdminDep
    ) -> FaultView:
        """A participant's current fault mode."""
        mode = await faults.get_mode(session, participant)
        return FaultView(participant=participant, mode=mode.value)

    return router
