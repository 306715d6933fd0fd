"""TODO: being written."""
from gateway.context import Ctx
from gateway.errors import ApiError
from gateway.handlers import handler


@handler
async def list_tokens(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def create_token(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def revoke_token(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")
