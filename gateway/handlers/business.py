"""TODO: being written."""
from gateway.context import Ctx
from gateway.errors import ApiError
from gateway.handlers import handler


@handler
async def get_info(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def put_info(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def get_hours(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def put_hours(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def get_address(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def put_address(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")
