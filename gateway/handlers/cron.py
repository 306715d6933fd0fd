"""TODO: being written."""
from gateway.context import Ctx
from gateway.errors import ApiError
from gateway.handlers import handler


@handler
async def billing_reset(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")
