// The Flex Consumption plan and the Linux Python function app: HTTPS only, TLS 1.2, no FTP, identity-based
// storage (the AzureWebJobsStorage__* convention the code and the host share) and Key Vault references.

param location string
param tags object
param appName string
param resourceToken string

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity: selects it for storage, telemetry and the code.')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param appInsightsName string
param workspaceId string

// Key Vault secret URIs (no version): the platform resolves each Key Vault reference below with the identity.
param graphClientSecretUri string
param enrollioSharedSecretUri string
param tokenEncryptionKeysUri string
param enrollioEventsSecretUri string

param graphClientId string
param graphAuthority string
param graphBaseUrl string
param publicBaseUrl string
param enrollioReturnUrls string
param enrollioEventsUrl string
param graphRetryBudgetSeconds int
param attachmentCapBytes int
param maxMessageBytes int
param signatureWindowSeconds int
param catchupSpreadSeconds int
param maximumInstanceCount int
param instanceMemoryMB int

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy depends on the region; set zoneRedundant where the region offers it.
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Microsoft Graph delivers change notifications from the internet and browsers reach the OAuth callback.
  // checkov:skip=CKV_AZURE_17: Graph webhooks and browsers cannot present client certificates; Enrollio calls are HMAC-signed (sync_core/signing.py).
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design; always-ready instances are a cost choice (functionAppConfig.scaleAndConcurrency).
  // checkov:skip=CKV_AZURE_213: App Service health check evicts instances of a fixed-size plan; Flex Consumption instances are platform-managed. Operators call /api/health (README.md, Deploy to Azure).
  name: '${appName}-${resourceToken}'
  location: location
  // azd deploy finds the app of azure.yaml's service 'api' by this tag (README.md, Deploy to Azure, azd up).
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references resolve with the app's system identity unless told otherwise; it has none.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Where Graph, browsers and Enrollio reach the app: a custom domain when given, else the default hostname.
var baseUrl = empty(publicBaseUrl) ? 'https://${site.properties.defaultHostName}' : publicBaseUrl

// Settings names are sync_core/settings.py's aliases; tests/infra/test_infra_names.py keeps both in step.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: the Graph webhooks and the OAuth callback must stay anonymous (Graph cannot sign in), so App Service Authentication stays off; Enrollio calls are HMAC-signed.
  // checkov:skip=CKV_AZURE_222: same as on the site: Graph and browsers reach the app from the internet.
  // checkov:skip=CKV_AZURE_63: this resource is the appsettings dictionary; the check reads a property of the 'web' config, which a Flex Consumption function app does not use.
  // checkov:skip=CKV_AZURE_65: this resource is the appsettings dictionary; the check reads a property of the 'web' config, which a Flex Consumption function app does not use.
  // checkov:skip=CKV_AZURE_66: this resource is the appsettings dictionary; the check reads a property of the 'web' config, which a Flex Consumption function app does not use.
  // checkov:skip=CKV_AZURE_80: this resource is the appsettings dictionary; the check reads a property of the 'web' config, which a Flex Consumption function app does not use.
  // checkov:skip=CKV_AZURE_88: this resource is the appsettings dictionary; the check reads a property of the 'web' config, which a Flex Consumption function app does not use.
  parent: site
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__accountName: storageAccount.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    // With host.json's "telemetryMode": "OpenTelemetry", Microsoft's setting for the host to let the Python worker
    // stream its own OpenTelemetry logs, so the host adds no duplicate copies of them: see learn.microsoft.com,
    // azure/azure-functions/opentelemetry-howto. The worker sets up the Azure Monitor distro itself: the app's
    // spans, Graph and Storage dependencies, metrics, the sync_core loggers' records; sync_core/telemetry.py uses it.
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
    PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME: 'sync_core'
    GRAPH_CLIENT_ID: graphClientId
    GRAPH_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${graphClientSecretUri})'
    GRAPH_AUTHORITY: graphAuthority
    GRAPH_BASE_URL: graphBaseUrl
    PUBLIC_BASE_URL: baseUrl
    ENROLLIO_SHARED_SECRET: '@Microsoft.KeyVault(SecretUri=${enrollioSharedSecretUri})'
    TOKEN_ENCRYPTION_KEYS: '@Microsoft.KeyVault(SecretUri=${tokenEncryptionKeysUri})'
    ENROLLIO_RETURN_URLS: enrollioReturnUrls
    ENROLLIO_EVENTS_URL: enrollioEventsUrl
    ENROLLIO_EVENTS_SECRET: '@Microsoft.KeyVault(SecretUri=${enrollioEventsSecretUri})'
    GRAPH_RETRY_BUDGET_SECONDS: string(graphRetryBudgetSeconds)
    ATTACHMENT_CAP_BYTES: string(attachmentCapBytes)
    MAX_MESSAGE_BYTES: string(maxMessageBytes)
    SIGNATURE_WINDOW_SECONDS: string(signatureWindowSeconds)
    CATCHUP_SPREAD_SECONDS: string(catchupSpreadSeconds)
  }
}

// Publishing goes through Entra-authenticated deployment only: no FTP or basic-auth SCM credentials.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource siteDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: site
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = site.name
output publicBaseUrl string = baseUrl
