"""``GET /limits``: every limit a real org lists, the API request and Bulk API ones live, the others static."""

from __future__ import annotations

from typing import Any

from emulator.orgs import Org

__all__ = ["STATIC_LIMITS", "org_limits"]

# The rest of Salesforce's example answer (REST API Developer Guide, "List Org Limits"), which the emulator does
# not use up: Max and Remaining as that example shows them.
STATIC_LIMITS: dict[str, dict[str, Any]] = {
    "ActiveScratchOrgs": {"Max": 3, "Remaining": 3},
    "AnalyticsExternalDataSizeMB": {"Max": 40960, "Remaining": 40960},
    "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
    "ConcurrentEinsteinDataInsightsStoryCreation": {"Max": 5, "Remaining": 5},
    "ConcurrentEinsteinDiscoveryStoryCreation": {"Max": 2, "Remaining": 2},
    "ConcurrentSyncReportRuns": {"Max": 20, "Remaining": 20},
    "DailyAnalyticsDataflowJobExecutions": {"Max": 60, "Remaining": 60},
    "DailyAnalyticsUploadedFilesSizeMB": {"Max": 51200, "Remaining": 51200},
    "DailyFunctionsApiCallLimit": {"Max": 235000, "Remaining": 235000},
    "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
    "DailyAsyncApexTests": {"Max": 500, "Remaining": 500},
    "DailyDeliveredPlatformEvents": {"Max": 10000, "Remaining": 10000},
    "DailyDurableGenericStreamingApiEvents": {"Max": 10000, "Remaining": 10000},
    "DailyDurableStreamingApiEvents": {"Max": 10000, "Remaining": 10000},
    "DailyEinsteinDataInsightsStoryCreation": {"Max": 1000, "Remaining": 1000},
    "DailyEinsteinDiscoveryPredictAPICalls": {"Max": 50000, "Remaining": 50000},
    "DailyEinsteinDiscoveryPredictionsByCDC": {"Max": 5000000, "Remaining": 5000000},
    "DailyEinsteinDiscoveryStoryCreation": {"Max": 100, "Remaining": 100},
    "DailyGenericStreamingApiEvents": {"Max": 10000, "Remaining": 10000},
    "DailyScratchOrgs": {"Max": 6, "Remaining": 6},
    "DailyStandardVolumePlatformEvents": {"Max": 10000, "Remaining": 10000},
    "DailyStreamingApiEvents": {"Max": 10000, "Remaining": 10000},
    "DailyWorkflowEmails": {"Max": 100000, "Remaining": 100000},
    "DataStorageMB": {"Max": 1024, "Remaining": 1024},
    "DurableStreamingApiConcurrentClients": {"Max": 20, "Remaining": 20},
    "FileStorageMB": {"Max": 1024, "Remaining": 1024},
    "HourlyAsyncReportRuns": {"Max": 1200, "Remaining": 1200},
    "HourlyDashboardRefreshes": {"Max": 200, "Remaining": 200},
    "HourlyDashboardResults": {"Max": 5000, "Remaining": 5000},
    "HourlyDashboardStatuses": {"Max": 999999999, "Remaining": 999999999},
    "HourlyLongTermIdMapping": {"Max": 100000, "Remaining": 100000},
    "HourlyManagedContentPublicRequests": {"Max": 50000, "Remaining": 50000},
    "HourlyODataCallout": {"Max": 20000, "Remaining": 20000},
    "HourlyPublishedPlatformEvents": {"Max": 50000, "Remaining": 50000},
    "HourlyPublishedStandardVolumePlatformEvents": {"Max": 1000, "Remaining": 1000},
    "HourlyShortTermIdMapping": {"Max": 100000, "Remaining": 100000},
    "HourlySyncReportRuns": {"Max": 500, "Remaining": 500},
    "HourlyTimeBasedWorkflow": {"Max": 1000, "Remaining": 1000},
    "MassEmail": {"Max": 5000, "Remaining": 5000},
    "MonthlyEinsteinDiscoveryStoryCreation": {"Max": 500, "Remaining": 500},
    "Package2VersionCreates": {"Max": 6, "Remaining": 6},
    "Package2VersionCreatesWithoutValidation": {"Max": 500, "Remaining": 500},
    "PermissionSets": {"Max": 1500, "Remaining": 1499, "CreateCustom": {"Max": 1000, "Remaining": 999}},
    "PlatformEventTriggersWithParallelProcessing": {"Max": 5, "Remaining": 4},
    "PrivateConnectOutboundCalloutHourlyLimitMB": {"Max": 0, "Remaining": 0},
    "SingleEmail": {"Max": 5000, "Remaining": 5000},
    "StreamingApiConcurrentClients": {"Max": 20, "Remaining": 20},
}


def org_limits(org: Org) -> dict[str, Any]:
    """The org's ``/limits`` answer: the static table with the live entries in their place."""
    return {**STATIC_LIMITS, "DailyApiRequests": org.usage.limits_entry(), **org.bulk.budgets.limits()}
