"""SQLAlchemy models; importing this package registers every table with the metadata."""

from app.models.api_key import ApiKey
from app.models.auth_session import AuthSession
from app.models.external_call import ExternalCall
from app.models.usage import UsageLimit, UsageRecord
from app.models.user import User

__all__ = ["ApiKey", "AuthSession", "ExternalCall", "UsageLimit", "UsageRecord", "User"]
