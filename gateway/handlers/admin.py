"""TODO: being written."""
from gateway.context import Ctx
from gateway.errors import ApiError
from gateway.handlers import handler


@handler
async def list_organizations(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def get_organization(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def patch_organization(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def user_magic_link(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")


@handler
async def reload_config(ctx: Ctx):
    raise ApiError(501, "not implemented yet", "not_implemented")
