"""LinkedIn Conversions API events, exactly as `POST /rest/conversionEvents` takes them.

Source: seed 003 ("Streaming Conversion Events", "Input Data Validation").
Every validation rule LinkedIn applies is applied here, at enqueue time.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import (
    BaseModel,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from dispatcher.currencies import Currency
from dispatcher.events.base import (
    STRICT,
    FreeText,
    PlatformEvent,
    aware_to_epoch,
    check_event_time,
)
from dispatcher.identity import hash_email
from dispatcher.validation import decimal_text

if TYPE_CHECKING:
    from dispatcher.settings import Destination

WINDOW_MS = 90 * 86_400_000
CONVERSION_URN = r"^urn:lla:llaPartnerConversion:[0-9]+$"


class _Part(BaseModel):
    model_config = STRICT


class IdType(StrEnum):
    """The user identifiers LinkedIn matches on."""

    SHA256_EMAIL = "SHA256_EMAIL"
    LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID = "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID"
    ACXIOM_ID = "ACXIOM_ID"
    ORACLE_MOAT_ID = "ORACLE_MOAT_ID"


# A global: `IdType.SHA256_EMAIL` is an attribute lookup through the enum class (60 ns).
_EMAIL_ID = IdType.SHA256_EMAIL


class UserId(_Part):
    """One identifier; a raw email given as SHA256_EMAIL is normalised and hashed here."""

    id_type: IdType = Field(alias="idType")
    id_value: str = Field(alias="idValue", min_length=1, max_length=512)

    @field_validator("id_value")
    @classmethod
    def _hash_email(cls, value: str, info: ValidationInfo) -> str:
        # id_type is declared first, so it is validated (or missing) by now.
        return hash_email(value) if info.data.get("id_type") is _EMAIL_ID else value


class UserInfo(_Part):
    """Names for matching. LinkedIn needs them in plain text (see `allow_plain_user_info`)."""

    first_name: str = Field(alias="firstName", min_length=1, max_length=256)
    last_name: str = Field(alias="lastName", min_length=1, max_length=256)
    company_name: str | None = Field(default=None, alias="companyName", max_length=256)
    title: str | None = Field(default=None, max_length=256)
    country_code: str | None = Field(default=None, alias="countryCode", pattern=r"^[A-Z]{2}$")


class ConversionValue(_Part):
    """Money: an ISO 4217 code and a decimal string amount (required when a value is sent)."""

    currency_code: Currency = Field(alias="currencyCode")
    amount: Annotated[str, Field(pattern=r"^[0-9]{1,15}(\.[0-9]{1,6})?$")]

    @field_validator("amount", mode="before")
    @classmethod
    def _decimal_to_str(cls, value: object) -> object:
        return decimal_text(value)


class ConversionUser(_Part):
    """Who converted: at least one userId, or userInfo with both names."""

    user_ids: list[UserId] = Field(default_factory=list, alias="userIds", max_length=4)
    user_info: UserInfo | None = Field(default=None, alias="userInfo")
    lead: str | None = Field(default=None, pattern=r"^urn:li:leadGenFormResponse:[\w-]+$")
    external_ids: list[FreeText] | None = Field(default=None, alias="externalIds", max_length=1)

    @model_validator(mode="after")
    def _identifiable(self) -> ConversionUser:
        if not self.user_ids and self.user_info is None:
            raise ValueError(
                "needs one of userIds (SHA256_EMAIL, LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID, "
                "ACXIOM_ID, ORACLE_MOAT_ID) or userInfo with firstName and lastName"
            )
        return self


class LinkedInConversionEvent(PlatformEvent):
    """One conversion for a LinkedIn conversion rule.

    `conversionHappenedAt` takes epoch milliseconds or an aware `datetime`, and must lie
    within the past 90 days (not in the future).
    """

    platform: ClassVar[str] = "linkedin"
    time_field: ClassVar[str] = "conversionHappenedAt"
    event_id_field: ClassVar[str] = "eventId"

    conversion: str = Field(pattern=CONVERSION_URN)
    conversion_happened_at: int = Field(alias="conversionHappenedAt")
    conversion_value: ConversionValue | None = Field(default=None, alias="conversionValue")
    event_id: str | None = Field(default=None, alias="eventId", min_length=1, max_length=256)
    user: ConversionUser

    @field_validator("conversion_happened_at", mode="wrap")
    @classmethod
    def _in_window(cls, value: object, handler: ValidatorFunctionWrapHandler) -> int:
        return check_event_time(handler(aware_to_epoch(value, per_second=1000)), WINDOW_MS)

    def happened_at_ms(self) -> int:
        return self.conversion_happened_at

    def given_event_id(self) -> str | None:
        return self.event_id

    def policy_errors(self, destination: Destination) -> list[tuple[str, str]]:
        if self.user.user_info is not None and not destination.allow_plain_user_info:
            return [
                (
                    "user.userInfo",
                    "LinkedIn takes names unhashed; set allow_plain_user_info = true on the "
                    "destination to store and send them, or send a hashed email instead",
                )
            ]
        return []


EVENT = LinkedInConversionEvent
